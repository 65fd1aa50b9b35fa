"""Invoke's answers are taken whole: an attempt that fails after it began answering may be
retried or sent to the fallback, because the caller has seen nothing yet.

The router reads such an attempt to its ``Finish`` before it commits (:func:`drain`), then
hands the answer on (:func:`replay`). An attempt given up after it began answering, or cut
short because the caller left, still cost what the upstream billed: the router writes it into
the call's :class:`~service.routing.tab.Tab`, which the state pipeline charges with the call.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from service.domain import ProviderEvent


async def drain(events: AsyncGenerator[ProviderEvent, None], seen: list[ProviderEvent]) -> None:
    """Read ``events`` to their end into ``seen`` (kept on failure: what was delivered).

    Closes ``events`` on every exit. Raises what they raise.
    """
    async with aclosing(events) as source:
        async for event in source:
            seen.append(event)  # noqa: PERF401 (kept as they come: a failure keeps them)


async def replay(events: list[ProviderEvent]) -> AsyncGenerator[ProviderEvent, None]:
    for event in events:
        yield event
