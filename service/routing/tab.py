"""What one call's upstream attempts cost besides the answer it returns.

An attempt that began answering cost what the upstream billed, whether or not it became the
answer: an Invoke attempt given up after a drop or an error mid-answer (then retried or sent
to the fallback), the loser of a hedge race that had begun answering too, a whole answer cut
short because its caller left. The router writes each into the call's :class:`Tab`, with the
target it ran on; the state pipeline prices each at its own target's price and charges the
sum with the call (ledger line, budget, tokens-per-minute limits). Before an extra attempt
(a retry, a fallback) the router asks the tab (:meth:`Tab.allows`), so that the call's
reservations stay an upper bound of what its attempts can cost.

A streamed attempt that never began answering (no first event) is charged nothing:
Switchboard cannot know whether the upstream processed the prompt. A non-streamed attempt
(an Invoke's, :attr:`ModelCall.whole`) shows nothing until it is whole: cut short after it was
sent, it is charged its prompt and its output bound (:meth:`Tab.cut`). Plain data, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from service.domain import ProviderEvent, TargetRef, Usage, UsageEvent
from service.providers.base import ModelCall, TargetSpec
from service.usage.bound import output_bound
from service.usage.estimate import answer_tokens, cut_short, estimated_usage, prompt_tokens


@dataclass(frozen=True, slots=True)
class Abandoned:
    """An attempt given up after it began answering: where it ran, what it cost, and why it
    was given up."""

    target: TargetRef
    usage: Usage
    error: str


class Tab:
    """One call's spend outside its answer. ``abandoned``: the attempts given up, in order.
    ``answer``: a whole answer's usage once it was read to its end (it cost that even if the
    call is cancelled before the answer reaches the pipeline). ``allow``: set by the state
    pipeline, reserves the bound of one more attempt on ``target`` (budgets, tokens per
    minute) and says whether it may be made."""

    __slots__ = ("abandoned", "allow", "answer")

    def __init__(self) -> None:
        # A tuple, replaced when one is added (rare): no empty list held by every call.
        self.abandoned: tuple[Abandoned, ...] = ()
        self.answer: Usage | None = None
        self.allow: Callable[[TargetSpec], Awaitable[bool]] | None = None

    async def allows(self, target: TargetSpec) -> bool:
        """Whether the call may make one more attempt on ``target`` (its cost reserved)."""
        return True if self.allow is None else await self.allow(target)

    def give_up(
        self, target: TargetRef, call: ModelCall, seen: Sequence[ProviderEvent], error: str
    ) -> None:
        """Add an attempt that delivered ``seen`` before it was given up for ``error``: its
        reported usage; else what an answer cut short is charged
        (:func:`~service.usage.estimate.cut_short`, from a partial ``UsageEvent`` if any)."""
        reported = [e for e in seen if isinstance(e, UsageEvent)]
        if reported and not reported[-1].partial:
            usage = reported[-1].usage
        else:
            partial = reported[-1].usage if reported else None
            prompt = (call.system_prompt, call.messages, call.tools)
            usage = cut_short(partial, prompt, answer_tokens(seen))
        self.abandoned += (Abandoned(target, usage, error),)

    def cut(self, target: TargetRef, call: ModelCall, error: str) -> None:
        """Add a non-streamed attempt (``call.whole``) cut short after it was sent
        (cancelled, or out of time): nothing of its answer was seen, and the upstream may
        bill all it generated, so it costs its prompt and the most it could have answered
        (the output bound its reservation held), estimated."""
        sent = prompt_tokens(call.system_prompt, call.messages, call.tools)
        most = output_bound(target.model, call.parameters.max_tokens)
        self.abandoned += (Abandoned(target, estimated_usage(sent, most), error),)

    def usage(self) -> Usage:
        """The abandoned attempts' usage summed (cost not included: each has its own price)."""
        return total(a.usage for a in self.abandoned)


def total(usages: Iterable[Usage]) -> Usage:
    """The sum of ``usages``: counts and cost added, ``estimated`` if any part was."""
    result = Usage()
    for usage in usages:
        values = {}
        for field in dataclasses.fields(Usage):
            x, y = getattr(result, field.name), getattr(usage, field.name)
            values[field.name] = (x or y) if isinstance(x, bool) else x + y
        result = Usage(**values)
    return result
