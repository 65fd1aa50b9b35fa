"""Helpers for the guard tests: compile guards from config dicts, run a stream through the
output guard."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from service.config.guards_model import GuardConfig
from service.domain import (
    Event,
    Finish,
    FinishReason,
    GuardVerdict,
    TextDelta,
    Tool,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from service.guards import AgentGuards, Guard, GuardContext, OutputGuard, Stage, check
from service.guards.compile import compile_guards

_ADAPTER: TypeAdapter[GuardConfig] = TypeAdapter(GuardConfig)


def wide(text: str) -> str:
    """``text`` in full-width characters (U+FF01-U+FF5E), as NFKC folds back."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def guards(**configs: Mapping[str, Any]) -> dict[str, Guard]:
    return compile_guards({name: _ADAPTER.validate_python(c) for name, c in configs.items()})


def one(kind: str, **options: Any) -> tuple[Guard, ...]:
    return tuple(guards(g={"kind": kind, **options}).values())


async def checked(guard_set: Sequence[Guard], text: str, stage: Stage = Stage.INPUT) -> Any:
    return await check(guard_set, stage, text, GuardContext("agent"))


async def redacted(kind: str, text: str, **options: Any) -> str:
    result = await checked(one(kind, action="redact", **options), text)
    assert result.blocked is None
    return str(result.text)


class Seen:
    """An upstream that records how far it was read and whether it was closed."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = events
        self.read = 0
        self.closed = False

    async def run(self) -> AsyncGenerator[Event, None]:
        try:
            for event in self.events:
                self.read += 1
                yield event
        finally:
            self.closed = True


def answer(*deltas: str, tool_calls: Sequence[tuple[str, str]] = ()) -> list[Event]:
    events: list[Event] = [TextDelta(d) for d in deltas]
    for i, (name, arguments) in enumerate(tool_calls):
        events.append(ToolCallDelta(i, f"call_{i}", name))
        middle = len(arguments) // 2
        events += [
            ToolCallDelta(i, arguments_delta=arguments[:middle]),
            ToolCallDelta(i, arguments_delta=arguments[middle:]),
        ]
    events.append(UsageEvent(Usage(input_tokens=10, output_tokens=5)))
    events.append(Finish(FinishReason.TOOL_CALLS if tool_calls else FinishReason.STOP))
    return events


async def streamed(
    output: Sequence[Guard],
    events: Sequence[Event],
    *,
    tool_call: Sequence[Guard] = (),
    tools: Sequence[Tool] | None = (),
    ctx: GuardContext | None = None,
) -> tuple[list[Event], Seen]:
    upstream = Seen(events)
    agent = AgentGuards(output=tuple(output), tool_call=tuple(tool_call))
    offered = None if tools is None else {t.name: t for t in tools}
    guard = OutputGuard(agent, ctx or GuardContext("agent"), offered, 7)
    out = [e async for e in guard.events(upstream.run())]
    return out, upstream


def text_of(events: Sequence[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def finish_of(events: Sequence[Event]) -> Finish:
    last = events[-1]
    assert isinstance(last, Finish)
    return last


def verdicts(events: Sequence[Event]) -> set[tuple[str, str, str, str]]:
    return {(v.guard, v.stage, v.category, v.action) for v in finish_of(events).verdicts}


__all__ = ["GuardVerdict"]
