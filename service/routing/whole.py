"""Invoke's answers are taken whole: an attempt that fails after it began answering may be
retried or sent to the fallback, because the caller has seen nothing yet.

The router reads such an attempt to its ``Finish`` before it commits (:func:`drain`). An
attempt given up after it began answering still cost what the upstream billed, so it is kept
as an :class:`Abandoned`: the usage the upstream reported, or else an estimate of the prompt
sent and the output delivered (:mod:`service.usage.estimate`, marked ``estimated``). The
answer finally returned carries the sum of its own usage and every abandoned attempt's
(:func:`with_spent`), so the state pipeline charges them with it; a call that fails for good
reports what it spent the same way (``Opened``-less: see ``Router.open``).

An attempt whose caller left while it was read (cancelled: the caller, its deadline, a
drain) is kept too, in the list the caller gave ``Router.open``, since no error carries it:
the state pipeline charges it. A non-streamed attempt (:attr:`ModelCall.whole`) shows
nothing until its answer is complete; cut short after it was sent, it costs its output
bound (:func:`cut`), as the upstream may go on generating and bill the whole answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from service.domain import Finish, ProviderEvent, TargetRef, Usage, UsageEvent
from service.providers.base import ModelCall
from service.providers.coalesce import coalesced
from service.usage.bound import output_bound
from service.usage.estimate import answer_tokens, estimated_usage, prompt_tokens


@dataclass(frozen=True, slots=True)
class Abandoned:
    """An attempt given up after it began answering: who, why, and what it cost."""

    target: TargetRef
    usage: Usage
    error: str


async def drain(events: AsyncGenerator[ProviderEvent, None], seen: list[ProviderEvent]) -> None:
    """Read ``events`` to their end into ``seen`` (kept on failure: what was delivered).

    Closes ``events`` on every exit. Raises what they raise.
    """
    async with aclosing(events) as source:
        async for event in source:
            seen.append(event)  # noqa: PERF401 (kept as they come: a failure keeps them)


def abandoned(
    target: TargetRef, call: ModelCall, seen: Sequence[ProviderEvent], error: str
) -> Abandoned:
    """The attempt's cost: its last reported usage, or the estimate of ``call``'s prompt and
    the output in ``seen``."""
    reported = [e.usage for e in seen if isinstance(e, UsageEvent)]
    if reported:
        return Abandoned(target, reported[-1], error)
    sent = prompt_tokens(call.system_prompt, call.messages, call.tools)
    return Abandoned(target, estimated_usage(sent, answer_tokens(seen)), error)


def cut(target: TargetRef, call: ModelCall, error: str) -> Abandoned:
    """A non-streamed attempt (``call.whole``) cut short after it was sent (cancelled, or
    out of time): nothing of its answer was seen, and the upstream may bill all it
    generated, so it costs its prompt and the most it could have answered (the output bound
    its reservation held), estimated."""
    sent = prompt_tokens(call.system_prompt, call.messages, call.tools)
    most = output_bound(target.model, call.parameters.max_tokens)
    return Abandoned(target, estimated_usage(sent, most), error)


def total(usages: Iterable[Usage]) -> Usage:
    """The sum of ``usages``: counts and cost added, ``estimated`` if any part was."""
    result = Usage()
    for usage in usages:
        result = _add(result, usage)
    return result


def _add(a: Usage, b: Usage) -> Usage:
    values = {}
    for field in dataclasses.fields(Usage):
        x, y = getattr(a, field.name), getattr(b, field.name)
        values[field.name] = (x or y) if isinstance(x, bool) else x + y
    return Usage(**values)


def with_spent(events: list[ProviderEvent], spent: Sequence[Abandoned]) -> list[ProviderEvent]:
    """``events`` (a whole answer) with its usage raised by what ``spent`` cost."""
    if not spent:
        return events
    extra = total(a.usage for a in spent)
    last = max((i for i, e in enumerate(events) if isinstance(e, UsageEvent)), default=None)
    out = list(events)
    if last is not None:
        reported = out[last]
        assert isinstance(reported, UsageEvent)
        out[last] = UsageEvent(_add(reported.usage, extra))
    else:  # no usage at all: the spent attempts' alone, before the Finish
        at = next((i for i, e in enumerate(out) if isinstance(e, Finish)), len(out))
        out.insert(at, UsageEvent(extra))
    return out


async def replay(events: list[ProviderEvent]) -> AsyncGenerator[ProviderEvent, None]:
    """``events`` with each run of deltas joined (:func:`coalesced`): the caller takes the
    answer whole, so every layer above passes a few events instead of one per token."""
    for event in coalesced(events):
        yield event
