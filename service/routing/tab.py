"""What one call's upstream attempts cost besides the answer it returns.

An attempt that began answering cost what the upstream billed, whether or not it became the
answer: an Invoke attempt given up after a drop or an error mid-answer (then retried or sent
to the fallback), the loser of a hedge race that had begun answering too, a whole answer cut
short because its caller left. The router writes each into the call's :class:`Tab`, with the
target it ran on; the state pipeline prices each at its own target's price and charges the
sum with the call (ledger line, budget, tokens-per-minute limits).

A streamed attempt that never began answering (no first event) is charged nothing:
Switchboard cannot know whether the upstream processed the prompt. A non-streamed attempt
(an Invoke's, :attr:`ModelCall.whole`) shows nothing until it is whole: cut short after it was
sent, it is charged its prompt and its output bound (:meth:`Tab.cut`). Plain data, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from service.domain import ProviderEvent, TargetRef, Usage, UsageEvent
from service.providers.base import ModelCall
from service.usage.bound import output_bound
from service.usage.estimate import answer_tokens, estimated_usage, prompt_tokens


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
    call is cancelled before the answer reaches the pipeline)."""

    __slots__ = ("abandoned", "answer")

    def __init__(self) -> None:
        self.abandoned: list[Abandoned] = []
        self.answer: Usage | None = None

    def give_up(
        self, target: TargetRef, call: ModelCall, seen: Sequence[ProviderEvent], error: str
    ) -> None:
        """Add an attempt that delivered ``seen`` before it was given up for ``error``: its
        last reported usage, or the estimate of ``call``'s prompt and the output in ``seen``
        (marked ``estimated``)."""
        reported = [e.usage for e in seen if isinstance(e, UsageEvent)]
        if reported:
            usage = reported[-1]
        else:
            sent = prompt_tokens(call.system_prompt, call.messages, call.tools)
            usage = estimated_usage(sent, answer_tokens(seen))
        self.abandoned.append(Abandoned(target, usage, error))

    def cut(self, target: TargetRef, call: ModelCall, error: str) -> None:
        """Add a non-streamed attempt (``call.whole``) cut short after it was sent
        (cancelled, or out of time): nothing of its answer was seen, and the upstream may
        bill all it generated, so it costs its prompt and the most it could have answered
        (the output bound its reservation held), estimated."""
        sent = prompt_tokens(call.system_prompt, call.messages, call.tools)
        most = output_bound(target.model, call.parameters.max_tokens)
        self.abandoned.append(Abandoned(target, estimated_usage(sent, most), error))

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
