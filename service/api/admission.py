"""Admission of agent calls: counts calls in flight and refuses new ones once drain starts.

Drain refuses with UNAVAILABLE ("retry on another replica") at the application level, so a
caller always gets that status rather than whatever the transport does with a call that races
the server's GOAWAY; the transport is shut down only after the calls in flight have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from service.errors import Unavailable


class Admission:
    def __init__(self) -> None:
        self._in_flight = 0
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for one call while the block runs.

        Raises:
            Unavailable: the server is draining.
        """
        if self._draining:
            raise Unavailable("the server is shutting down: retry on another replica")
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
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
