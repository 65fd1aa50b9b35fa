"""Invoke's answers are taken whole: an attempt that fails after it began answering may be
retried or sent to the fallback, because the caller has seen nothing yet.

The router reads such an attempt to its ``Finish`` before it commits (:func:`drain`), then
hands the answer on (:func:`replay`). An attempt given up after it began answering, or cut
short because the caller left (the caller, its deadline, a drain), still cost what the
upstream billed: the router writes it into the call's :class:`~service.routing.tab.Tab`,
which the state pipeline charges with the call. A non-streamed attempt
(:attr:`ModelCall.whole`) shows nothing until its answer is complete; cut short after it was
sent, it costs its output bound (:meth:`~service.routing.tab.Tab.cut`), as the upstream may go
on generating and bill the whole answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.domain import ProviderEvent
from service.providers.coalesce import coalesced


async def drain(events: AsyncGenerator[ProviderEvent, None], seen: list[ProviderEvent]) -> None:
    """Read ``events`` to their end into ``seen`` (kept on failure: what was delivered).

    Closes ``events`` on every exit. Raises what they raise.
    """
    async with aclosing(events) as source:
        async for event in source:
            seen.append(event)  # noqa: PERF401 (kept as they come: a failure keeps them)


async def replay(events: list[ProviderEvent]) -> AsyncGenerator[ProviderEvent, None]:
    """``events`` with each run of deltas joined (:func:`coalesced`): the caller takes the
    answer whole, so every layer above passes a few events instead of one per token."""
    for event in coalesced(events):
        yield event
