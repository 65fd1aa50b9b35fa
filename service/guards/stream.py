"""The output stage over an answer's event stream.

Text is released as soon as no guard can still object to it. After each delta the
unreleased text (plus a little released context, for word boundaries) is scanned; each
span guard says how much of the tail could begin a match that more text would complete
(``hold``: the trailing run of characters its patterns can contain, a denied term's prefix,
a sentence in progress for the injection heuristics), and a match that touches the end may
still grow, so it is held too. Everything before the earliest held character is final: its
matches are redacted and it is sent. So an e-mail address split across three deltas is
held until its end is seen, then sent as ``[EMAIL]``; text with nothing suspicious at its
end goes out at once.

A block ends the answer: nothing held back is sent, the upstream call is closed, and the
stream ends with usage (the upstream's, or estimated from what it sent) and a Finish with
reason CONTENT_FILTER carrying the verdicts. Guards that need the whole text (JSON schema,
an external endpoint) make the stream hold the whole answer and release it at the end.

Tool calls are held until the answer finishes and checked whole
(:func:`~service.guards.tools.check_tool_call`: the tool must be one offered to the call,
its arguments valid JSON that follows the tool's schema, and they pass the output and
tool_call guards), for every agent. A loop that runs tools on the server passes
``tools=None`` and checks each call itself (a blocked call becomes a refused result there).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing

from service.domain import (
    Event,
    Finish,
    FinishReason,
    GuardVerdict,
    TextDelta,
    Tool,
    ToolCallDelta,
    UsageEvent,
    join_piece,
)
from service.guards.base import Finding, Stage
from service.guards.check import (
    Checked,
    GuardContext,
    Hit,
    check,
    merge_verdicts,
    verdicts_of,
)
from service.guards.compile import AgentGuards
from service.guards.normalize import normalize
from service.guards.scan import SpanScan
from service.guards.tools import check_tool_call
from service.usage.estimate import AnswerCounter, estimated_usage

CONTEXT_CHARS = 32  # released text kept for the next scan (word boundaries, lookbehinds)


class OutputGuard:
    """Guards one answer. ``tools``: the tools offered to the call, by name (None: tool
    calls are passed on whole, unchecked, for a server-side loop to check each one);
    ``only``: when set, only calls to these tools are checked (a loop's step: the caller's
    tools), the others passed on unchecked for the loop to check.
    ``prompt_tokens``: the prompt's estimated size (or what makes it, asked only when needed),
    for the usage of a blocked answer whose upstream reported none."""

    # Slots: every answer holds one while it streams (an instance dict of 17 was ~0.6 KB).
    __slots__ = (
        "_answer", "_bytes", "_calls", "_chars", "_ctx", "_finish", "_guards", "_lengths",
        "_long", "_only", "_prompt_tokens", "_refused", "_scan", "_tools", "_usage",
        "_verdicts", "_whole_text",
    )  # fmt: skip

    def __init__(
        self,
        guards: AgentGuards,
        ctx: GuardContext,
        tools: Mapping[str, Tool] | None,
        prompt_tokens: int | Callable[[], int],
        *,
        only: frozenset[str] | None = None,
    ) -> None:
        self._guards = guards
        self._ctx = ctx
        self._tools = tools
        self._only = only
        self._prompt_tokens = prompt_tokens
        # Tuples, and containers made when first needed: an answer holds this for as long
        # as it streams, and most answers have no output guards (tuple() of nothing is the
        # shared empty tuple).
        spans = tuple(g for g in guards.output if g.matcher is not None)
        self._scan = SpanScan(spans, Stage.OUTPUT, ctx.observer)  # span and length hits
        self._lengths = tuple(g for g in guards.output if g.length is not None)
        self._chars = 0  # normalised characters seen
        self._bytes = 0
        self._long: tuple[str, ...] = ()  # length guards already over their limit
        self._verdicts: tuple[tuple[GuardVerdict, ...], ...] = ()  # whole-text, tool-call ones
        self._refused = False  # a whole-text guard or a tool call blocked
        whole = any(g.judge is not None for g in guards.output)
        self._whole_text: list[str] | None = [] if whole else None  # held for whole-text guards
        # What the answer brought so far (its events taken one by one: take()).
        self._calls: dict[int, list[str]] = {}  # tool calls by index: id, name, arguments
        self._usage: UsageEvent | None = None
        self._answer = AnswerCounter()
        self._finish: Finish | None = None

    async def events(self, source: AsyncGenerator[Event, None]) -> AsyncGenerator[Event, None]:
        """``source``'s events, guarded (see the module docstring). Closing this closes
        ``source``; a block closes it too, before the last events are sent."""
        async with aclosing(source) as upstream:
            async for event in upstream:
                passed = self.take(event)
                if passed is not None:
                    yield passed
                if self.done:
                    break
        for event in await self.ending():
            yield event

    def take(self, event: Event) -> Event | None:
        """Take in the answer's next event; return what may be sent now (None: nothing).
        Stop reading and close the upstream once :attr:`done`, then send :meth:`ending`'s.
        (The same as :meth:`events`, for a reader that holds no generator per answer.)"""
        self._answer.add(event)
        match event:
            case TextDelta(text=text):
                released = self._take(text)
                return TextDelta(released) if released else None
            case ToolCallDelta():
                join_piece(self._calls, event)
            case UsageEvent(partial=False):
                self._usage = event
            case Finish():
                self._finish = event
            case _:
                return event
        return None

    @property
    def done(self) -> bool:
        """Nothing more is taken: the answer finished, or a guard blocked it."""
        return self._blocked or self._finish is not None

    async def ending(self) -> list[Event]:
        """The answer's last events once :attr:`done` (the upstream closed): the text held
        back, the tool calls checked, usage and a Finish with the verdicts; or the usage and
        a CONTENT_FILTER Finish of a blocked answer. Nothing when the upstream ended without
        finishing (the runner says so)."""
        finish = self._finish
        if finish is None and not self._blocked:
            return []
        rest, checked_calls = "", []
        if not self._blocked:
            rest = await self._rest()
            checked_calls = await self._check_calls(self._calls)
        if self._blocked:
            usage = self._usage or UsageEvent(estimated_usage(self._prompt(), self._answer.tokens))
            return [usage, Finish(FinishReason.CONTENT_FILTER, verdicts=self._report())]
        assert finish is not None
        out: list[Event] = [TextDelta(rest)] if rest else []
        out.extend(
            ToolCallDelta(index, call_id, name, arguments)
            for index, (call_id, name, arguments) in checked_calls
        )
        if self._usage is not None:
            out.append(self._usage)
        out.append(
            Finish(finish.reason, finish.attempts, finish.cache_hit, finish.target, self._report())
        )
        return out

    def _prompt(self) -> int:
        tokens = self._prompt_tokens
        return tokens() if callable(tokens) else tokens

    @property
    def _blocked(self) -> bool:
        return self._refused or self._scan.blocked

    def _report(self) -> tuple[GuardVerdict, ...]:
        if not self._scan.hits and not any(self._verdicts):
            return ()  # nothing found (an agent with no output guards): nothing to merge
        spans = verdicts_of(self._scan.hits, Stage.OUTPUT)
        for verdict in spans:
            self._ctx.observer.verdict(verdict)
        return merge_verdicts(spans, *self._verdicts)

    def _take(self, text: str) -> str:
        """Take in a delta; return the text now safe to send (redacted)."""
        if self._lengths:
            folded = normalize(text)
            self._chars += len(folded.text)
            self._bytes += len(text.encode("utf-8", "surrogatepass"))
            for guard in self._lengths:
                assert guard.length is not None
                if guard.name not in self._long and guard.length.exceeded(self._chars, self._bytes):
                    self._long += (guard.name,)
                    finding = Finding(0, 0, "too_long", "", raw=True)
                    self._scan.hit(Hit(guard.name, guard.action, finding))
            if self._blocked:
                return ""
        if self._whole_text is not None:
            self._whole_text.append(text)
            return ""
        return self._scan.take(text)

    async def _rest(self) -> str:
        """The held text at the answer's end, checked whole where whole-text guards are on."""
        if self._whole_text is None:
            return self._scan.finish()
        text = "".join(self._whole_text)
        checked: Checked = await check(self._guards.output, Stage.OUTPUT, text, self._ctx)
        self._verdicts += (checked.verdicts,)
        if checked.blocked is not None:
            self._refused = True
        return checked.text

    async def _check_calls(
        self, calls: dict[int, list[str]]
    ) -> list[tuple[int, tuple[str, str, str]]]:
        checked: list[tuple[int, tuple[str, str, str]]] = []
        for index, (call_id, name, arguments) in sorted(calls.items()):
            if self._tools is None or (self._only is not None and name not in self._only):
                checked.append((index, (call_id, name, arguments)))
                continue
            result = await check_tool_call(
                self._guards, self._ctx, self._tools.get(name), arguments
            )
            self._verdicts += (result.verdicts,)
            if result.blocked is not None:
                self._refused = True
                return []
            checked.append((index, (call_id, name, result.arguments_json)))
        return checked
