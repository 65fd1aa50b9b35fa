"""Serves answers from the cache, or produces and stores them, one upstream call per key.

Concurrent identical calls in one process are collapsed (single-flight): the first produces
the answer and streams it live; the others wait for it and get it replayed. If the first
fails, each waiter produces its own. A replay is the answer's events with usage at zero cost
and a Finish marked ``cache_hit`` with ``attempts=0``.

The cache is an optimisation: a store failure is logged and the call goes upstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing

from service.cache import codec
from service.deadline import Deadline
from service.domain import Event, Finish, Start
from service.errors import DeadlineExceeded, SwitchboardError
from service.state.stores import CacheStore

log = logging.getLogger(__name__)

Produce = Callable[[], AsyncGenerator[Event, None]]


class ResponseCache:
    """``observe(agent, hit)`` is told of every lookup (for metrics)."""

    def __init__(
        self, store: CacheStore, observe: Callable[[str, bool], None] | None = None
    ) -> None:
        self._store = store
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self._observe = observe or (lambda agent, hit: None)

    async def serve(
        self, key: str, ttl_s: float, start: Start, produce: Produce, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """The answer's events, from the cache or from ``produce()``.

        ``start`` is the Start a replay begins with (its target is replaced by the cached
        one). Waiting for another call's answer honours ``deadline`` (DeadlineExceeded).
        """
        cached = await self._get(key)
        flight = self._flights.get(key)
        if cached is None and flight is not None:
            try:
                async with asyncio.timeout(deadline.remaining()):
                    cached = await asyncio.shield(flight)
            except TimeoutError as exc:
                raise DeadlineExceeded(
                    "deadline exceeded while waiting for an identical call's answer"
                ) from exc
        self._observe(start.agent, cached is not None)
        if cached is not None:
            for event in _replay(cached, start):
                yield event
            return
        async for event in self._produce(key, ttl_s, produce):
            yield event

    async def _produce(
        self, key: str, ttl_s: float, produce: Produce
    ) -> AsyncGenerator[Event, None]:
        mine: asyncio.Future[bytes | None] | None = None
        if key not in self._flights:
            mine = asyncio.get_running_loop().create_future()
            self._flights[key] = mine
        body: list[codec.Body] = []
        start: Start | None = None
        try:
            async with aclosing(produce()) as events:
                async for event in events:
                    if isinstance(event, Start):
                        start = event
                    elif isinstance(event, Finish):
                        if start is not None:
                            entry = codec.encode(start.target, body, event.reason)
                            if mine is not None:
                                mine.set_result(entry)
                            await self._put(key, entry, ttl_s)
                    else:
                        body.append(event)
                    yield event
        finally:
            if mine is not None:
                if not mine.done():
                    mine.set_result(None)
                self._flights.pop(key, None)

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self._store.get(key)
        except SwitchboardError as exc:
            log.warning("response cache read failed: %s", exc.message)
            return None

    async def _put(self, key: str, entry: bytes, ttl_s: float) -> None:
        try:
            await self._store.put(key, entry, ttl_s)
        except SwitchboardError as exc:
            log.warning("response cache write failed: %s", exc.message)


def _replay(data: bytes, start: Start) -> list[Event]:
    entry = codec.decode(data)
    return [
        Start(start.request_id, start.agent, start.agent_version, entry.target),
        *entry.events,
        Finish(entry.reason, attempts=0, cache_hit=True, target=entry.target),
    ]
