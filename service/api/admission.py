"""Admission of agent calls: counts calls in flight, refuses new ones past the concurrency
limit (RESOURCE_EXHAUSTED, at once: never queued) and once drain starts (UNAVAILABLE).

Drain refuses with UNAVAILABLE ("retry on another replica") at the application level, so a
caller always gets that status rather than whatever the transport does with a call that races
the server's GOAWAY; the transport is shut down only after the calls in flight have finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.errors import QuotaViolation, Reason, ResourceExhausted, Unavailable

# Retry hint for a call refused at the concurrency limit: calls take seconds, so soon.
BUSY_RETRY_AFTER_S = 1.0


class Admission:
    def __init__(self, max_in_flight: Callable[[], int] | None = None) -> None:
        """``max_in_flight`` gives the current limit (read per call, so a reload changes it)."""
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def admit(self) -> Admission:
        """Hold a place for one call while the ``with`` block it opens runs.

        Raises (on entering the block):
            Unavailable: the server is draining.
            ResourceExhausted: ``max_in_flight`` calls are in flight already.
        """
        # The admission itself is the context manager: a held Stream keeps no per-call
        # object for it (a contextlib generator and its wrapper were ~400 bytes a call).
        return self

    def __enter__(self) -> None:
        if self._draining:
            raise Unavailable(
                "the server is shutting down: retry on another replica", reason=Reason.DRAINING
            )
        limit = self._max_in_flight() if self._max_in_flight is not None else None
        if limit is not None and self._in_flight >= limit:
            raise ResourceExhausted(
                f"the server is at its limit of {limit} concurrent calls; retry shortly",
                retry_after_s=BUSY_RETRY_AFTER_S,
                violations=[QuotaViolation("server", "transport.max_concurrent_calls")],
                reason=Reason.SERVER_BUSY,
            )
        self._in_flight += 1
        self._idle.clear()

    def __exit__(self, *_exc: object) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new calls from now on; wait up to ``timeout_s`` for those in flight.

        Returns whether every call finished in time.
        """
        self._draining = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
