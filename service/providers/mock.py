"""The built-in mock provider: deterministic answers composed from the prompt, no keys.

It sits behind the same interface as the real providers. Models:

- ``echo``: answers with the last user message's text.
- any other name (``compose`` by convention): a short reply that quotes the conversation.

Fault switches (``mock:`` options, also changeable at run time through
``MockProvider.faults``) make it fail like a real upstream: an error kind for the first N
calls or a share of them (with a retry-after), a hang, a stream dropped after N tokens, and a
heavy-tailed time to first token. Draws come from a seeded RNG, so runs repeat.

In both, a last user message ``call <tool> <text>`` naming one of the offered tools makes the
model call that tool with ``{"<name>": "<text>"}`` (``<name>``: the tool's first required
parameter, else its first parameter, else ``input``, so the call fits a schema with one string
parameter), or with ``<text>`` itself when it is a JSON object; several such calls joined by
`` && `` are made at once (parallel tool calls). Last TOOL
messages (one per call answered) are acknowledged with their texts. Text is streamed word by
word (a word is one output token) after ``ttft_s``, at ``tokens_per_s``; a call marked
``whole`` (a non-streamed answer) gets it as one delta when its last word would have come.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import re
import zlib
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from service.deadline import Deadline
from service.domain import (
    Finish,
    FinishReason,
    ProviderEvent,
    ResponseFormatType,
    Role,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from service.errors import DeadlineExceeded, SwitchboardError, Unavailable
from service.providers.base import ModelCall, TargetSpec
from service.providers.upstream import AttemptLimit, Fault, upstream_error

_WORD = re.compile(r"\S+\s*")


@dataclass(slots=True)
class MockStats:
    """What the mock has seen, for operators and tests: real counts, not a call log."""

    started: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    in_flight: int = 0


@dataclass(slots=True)
class MockFaults:
    """How the mock misbehaves. Mutable on purpose: a chaos drill (or a test) flips these
    on a running server and the next calls obey."""

    fail_first: int = 0
    fail_rate: float = 0.0
    error: str = "unavailable"
    retry_after_s: float | None = None
    hang: bool = False
    drop_after_tokens: int | None = None
    tail_rate: float = 0.0
    tail_ttft_s: float = 0.0

    def error_for(self, target: TargetSpec) -> SwitchboardError:
        """The error this fault kind maps to, exactly as the SDK providers map the upstream
        error it stands for (:func:`service.providers.upstream.upstream_error`)."""
        if self.error == "deadline_exceeded":
            return DeadlineExceeded(f"target {target.name!r}: the upstream timed out (mock)")
        status, fault = _FAULTS.get(self.error, (503, Fault.SERVER))
        return upstream_error(
            fault,
            target,
            seen=f"HTTP {status}",
            message="mock fault",
            retry_after=self.retry_after_s,
        )


# Fault kind → (the HTTP status it stands for, what an SDK provider's table makes of it).
_FAULTS: dict[str, tuple[int, Fault]] = {
    "unavailable": (503, Fault.SERVER),
    "overloaded": (529, Fault.OVERLOADED),
    "rate_limited": (429, Fault.RATE_LIMIT),
    "resource_exhausted": (429, Fault.QUOTA),
    "invalid_argument": (400, Fault.INVALID_REQUEST),
    "context_window_exceeded": (400, Fault.CONTEXT_WINDOW),
    "content_policy": (400, Fault.CONTENT_POLICY),
    "unauthenticated": (401, Fault.AUTH),
    "model_not_found": (404, Fault.MODEL_NOT_FOUND),
}


def count_tokens(text: str) -> int:
    """The mock's tokenizer: one token per whitespace-separated word. (``str.split`` runs in
    C, several times faster than a regex over the text: a 3 MB prompt is counted in tens of
    milliseconds, not hundreds, on the event loop.)"""
    return len(text.split())


class MockProvider:
    """See the module docstring. Safe to share between concurrent calls."""

    def __init__(self, target: TargetSpec) -> None:
        self._target = target
        self._model = target.model
        self._ttft_s = float(target.options.get("ttft_s", 0.0))
        tokens_per_s = float(target.options.get("tokens_per_s", 0.0))
        self._token_interval_s = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
        self.stats = MockStats()
        options = target.options
        self.faults = MockFaults(
            fail_first=int(options.get("fail_first", 0)),
            fail_rate=float(options.get("fail_rate", 0.0)),
            error=str(options.get("error", "unavailable")),
            retry_after_s=options.get("retry_after_s"),
            hang=bool(options.get("hang", False)),
            drop_after_tokens=options.get("drop_after_tokens"),
            tail_rate=float(options.get("tail_rate", 0.0)),
            tail_ttft_s=float(options.get("tail_ttft_s", 0.0)),
        )
        self._rng = random.Random(options.get("seed"))  # noqa: S311 (simulation, not secrets)

    async def stream(
        self, call: ModelCall, deadline: Deadline
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Yields the answer's events; raises DeadlineExceeded when ``deadline`` passes."""
        self.stats.started += 1
        self.stats.in_flight += 1
        # As the SDK providers do: the earlier of the deadline and the target's timeout_s,
        # for the whole answer, checked at each step and bounding each wait (nothing is
        # held across a yield: it would cancel whatever the consumer is doing when it
        # fires). The answer is planned step by step (a plain generator) and waited for
        # here: one async generator, no timer but the wait's own.
        limit = AttemptLimit.of(deadline, self._target.timeout_s).deadline
        steps = self._steps(call)
        try:
            for delay_s, step in steps:
                await _wait(delay_s, limit)
                if isinstance(step, SwitchboardError):
                    raise step
                yield step
            self.stats.completed += 1
        except SwitchboardError:
            self.stats.failed += 1
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.in_flight -= 1
            steps.close()

    def _steps(
        self, call: ModelCall
    ) -> Generator[tuple[float, ProviderEvent | SwitchboardError], None, None]:
        """The answer: each event (or the error that ends it) after the wait before it."""
        input_tokens = count_tokens(call.system_prompt) + sum(
            count_tokens(m.text) + count_tokens(" ".join(c.arguments_json for c in m.tool_calls))
            for m in call.messages
        )
        faults = self.faults
        # Draw everything up front, so the sequence does not depend on timing.
        fails = faults.fail_first > 0 or self._rng.random() < faults.fail_rate
        slow = self._rng.random() < faults.tail_rate
        if faults.fail_first > 0:
            faults.fail_first -= 1
        hang = math.inf if faults.hang else 0.0  # until cancelled or out of time
        if fails:
            yield hang, faults.error_for(self._target)
            return
        ttft = hang + (faults.tail_ttft_s if slow else self._ttft_s)

        tool_calls = self._tool_calls(call)
        if tool_calls:
            for index, (name, arguments) in enumerate(tool_calls):
                key = f"{index}:{name}:{arguments}".encode()
                yield ttft, ToolCallDelta(index=index, id=f"call_{zlib.crc32(key):08x}", name=name)
                ttft = 0.0
                # Split the arguments as a real model would stream them.
                middle = len(arguments) // 2
                yield 0.0, ToolCallDelta(index=index, arguments_delta=arguments[:middle])
                yield 0.0, ToolCallDelta(index=index, arguments_delta=arguments[middle:])
            spent = sum(count_tokens(arguments) for _, arguments in tool_calls)
            yield ttft, UsageEvent(Usage(input_tokens=input_tokens, output_tokens=spent))
            yield 0.0, Finish(FinishReason.TOOL_CALLS)
            return

        text, reason = self._reply(call)
        words = _WORD.findall(text)
        if call.whole:
            # A non-streamed answer: all of it at once, when the last word would have come.
            drop = faults.drop_after_tokens
            shown = len(words) if drop is None else min(drop, len(words))
            if shown > 1:
                ttft += (shown - 1) * self._token_interval_s
            if shown < len(words):
                yield ttft, Unavailable("upstream dropped the connection (mock: connection reset)")
                return
            if text:
                yield ttft, TextDelta(text)
                ttft = 0.0
            yield ttft, UsageEvent(Usage(input_tokens=input_tokens, output_tokens=len(words)))
            yield 0.0, Finish(reason)
            return
        for i, word in enumerate(words):
            wait = ttft if i == 0 else self._token_interval_s
            if faults.drop_after_tokens is not None and i >= faults.drop_after_tokens:
                yield wait, Unavailable("upstream dropped the stream (mock: connection reset)")
                return
            yield wait, TextDelta(word)
        yield (
            ttft if not words else 0.0,
            UsageEvent(Usage(input_tokens=input_tokens, output_tokens=len(words))),
        )
        yield 0.0, Finish(reason)

    def _tool_calls(self, call: ModelCall) -> list[tuple[str, str]]:
        last = call.messages[-1] if call.messages else None
        if last is None or last.role is not Role.USER or not call.tools:
            return []
        offered = {t.name: t for t in call.tools}
        calls = []
        for part in last.text.split(" && "):
            match = re.match(r"\s*call\s+(\S+)\s*(.*)", part, re.DOTALL)
            if match is None or match[1] not in offered:
                return []
            text = match[2].strip()
            try:
                arguments = json.loads(text) if text.startswith("{") else None
            except (ValueError, RecursionError):  # RecursionError: deep nesting
                arguments = None
            if not isinstance(arguments, dict):
                arguments = {_argument_name(offered[match[1]].parameters): text}
            calls.append((match[1], json.dumps(arguments)))
        return calls

    def _reply(self, call: ModelCall) -> tuple[str, FinishReason]:
        last = call.messages[-1] if call.messages else None
        if last is not None and last.role is Role.TOOL:
            answers = []
            for message in reversed(call.messages):
                if message.role is not Role.TOOL:
                    break
                answers.append(message.text)
            text = f"The tool answered: {'; '.join(reversed(answers))}"
        else:
            user = [m.text for m in call.messages if m.role is Role.USER]
            said = user[-1] if user else ""
            if self._model == "echo":
                text = said
            else:
                n, m = count_tokens(said), len(call.messages)
                text = (
                    f"You said “{said}”. That is {n} word{'s' * (n != 1)} "
                    f"in a conversation of {m} message{'s' * (m != 1)}."
                )
        fmt = call.parameters.response_format
        if fmt is not None and fmt.type is not ResponseFormatType.TEXT:
            text = json.dumps({"reply": text})

        reason = FinishReason.STOP
        for stop in call.parameters.stop:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        limit = call.parameters.max_tokens
        if limit is not None:
            # Only as many words as the limit lets out: the work is bounded by the answer.
            words = list(itertools.islice(_WORD.finditer(text), limit + 1))
            if len(words) > limit:
                text = "".join(w.group() for w in words[:limit])
                reason = FinishReason.LENGTH
        return text, reason

    async def aclose(self) -> None:
        return None


async def _wait(delay_s: float, limit: Deadline) -> None:
    """Wait ``delay_s`` (none: only check the time), within ``limit``.

    Raises:
        DeadlineExceeded: ``limit`` passes first (or has passed).
    """
    left = limit.remaining()
    if left <= delay_s:
        if left > 0:
            await asyncio.sleep(left)
        raise DeadlineExceeded("deadline exceeded while the mock model was answering")
    if delay_s:
        await asyncio.sleep(delay_s)


def _argument_name(schema: Mapping[str, Any]) -> str:
    """The parameter the mock fills: the schema's first required one, else its first."""
    required = schema.get("required") or ()
    properties = schema.get("properties") or {}
    for name in (*required, *properties):
        if isinstance(name, str):
            return name
    return "input"
