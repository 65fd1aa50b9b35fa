"""What one call saw, as the state pipeline (:mod:`service.agents.pipeline`) records it:
its events folded, whether an upstream answered, the prompt it sent, the attempts it gave up,
and from these the usage it is charged; and the routed events priced."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace

from service.domain import (
    Event,
    Finish,
    Fold,
    GuardVerdict,
    Message,
    Start,
    TargetRef,
    Tool,
    Usage,
    UsageEvent,
)
from service.routing.tab import Tab, total
from service.usage.estimate import AnswerCounter, cut_short
from service.usage.pricing import PriceTable, usd


class Tally:
    """What one call saw: its events folded, whether the upstream answered, what it sent,
    and the attempts it gave up (``tab``)."""

    __slots__ = (
        "answered", "counter", "finish", "fold", "partial", "prompt", "recorded", "start", "tab",
        "upstream", "verdicts",
    )  # fmt: skip

    def __init__(self, verdicts: tuple[GuardVerdict, ...] = ()) -> None:
        self.verdicts = verdicts  # the input guards'; a Finish carries all of them
        self.tab = Tab()
        self.partial: Usage | None = None  # what the upstream reported mid-answer
        self.fold = Fold()
        self.counter = AnswerCounter()
        self.start: Start | None = None
        self.finish: Finish | None = None
        self.answered = False  # an upstream began answering (not a cache replay)
        self.recorded = False
        self.prompt: tuple[str, tuple[Message, ...], tuple[Tool, ...]] = ("", (), ())
        self.upstream: TargetRef | None = None  # the answering target, as routed

    def priced(self, event: Event, prices: PriceTable) -> Event | None:
        """A routed event with its usage's cost filled in from the answering target's
        price; None for a partial usage (kept as ``partial``: what a cut-short call is
        charged from). Marks ``answered`` when an upstream begins its answer."""
        if isinstance(event, Start):
            self.upstream = event.target
            self.answered = True
        elif isinstance(event, UsageEvent) and event.partial:
            self.partial = event.usage
            return None
        elif isinstance(event, UsageEvent) and self.upstream is not None:
            cost = usd(prices.cost_nanos(self.upstream, event.usage))
            return UsageEvent(replace(event.usage, cost_usd=cost))
        return event

    def add(self, event: Event) -> None:
        self.fold.add(event)
        self.counter.add(event)
        if isinstance(event, Start):
            self.start = event
        elif isinstance(event, Finish):
            self.finish = event

    def usage(self) -> Usage:
        """The answer's usage to charge (the abandoned attempts' apart): the upstream's
        report; else a whole answer's, read to its end before the call was cut short;
        else, when an upstream answered but the call ended early, what an answer cut short
        is charged (:func:`~service.usage.estimate.cut_short`); else none."""
        reported = self.fold.usage
        if reported.input_tokens or reported.output_tokens:
            return reported
        if self.tab.answer is not None:
            return self.tab.answer
        if not self.answered:
            return reported
        return cut_short(self.partial, self.prompt, self.counter.tokens)

    def spent_nanos(self, prices: PriceTable) -> int:
        """What the abandoned attempts cost, each at its own target's price."""
        return sum(prices.cost_nanos(a.target, a.usage) for a in self.tab.abandoned)

    def billed(self, event: UsageEvent, prices: PriceTable) -> UsageEvent:
        """The answer's usage event with the abandoned attempts' tokens and cost added."""
        own = prices.cost_nanos(self.start.target, event.usage) if self.start else 0
        usage = total((event.usage, self.tab.usage()))
        return UsageEvent(replace(usage, cost_usd=usd(own + self.spent_nanos(prices))))


async def priced(
    events: AsyncGenerator[Event, None], prices: PriceTable, call: Tally
) -> AsyncGenerator[Event, None]:
    """The events priced (:meth:`Tally.priced`), for the response cache to keep."""
    async with aclosing(events) as source:
        async for event in source:
            if (priced := call.priced(event, prices)) is not None:
                yield priced
