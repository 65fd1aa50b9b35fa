"""Serves answers from the cache, or produces and stores them, one upstream call per key.

Concurrent identical calls are collapsed (single-flight). In one process, the first call
produces the answer and streams it live; the others wait for it and get it replayed. Across
replicas, the first process to take the key's fill lease in the store produces; the others
poll the cache until the answer lands (or the lease is free again, and one of them takes it
over). Waiting honours each call's deadline. If the producer fails, each waiter produces its
own. A replay is the answer's events with usage at zero cost and a Finish marked
``cache_hit`` with ``attempts=0``, carrying the output guards' verdicts recorded with the
answer (the key covers the guards' definitions, so they are the verdicts its guards gave).

The cache is an optimisation: a store failure is logged and the call goes upstream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Callable

from service.cache import codec
from service.deadline import Deadline
from service.domain import (
    Event,
    Finish,
    FinishReason,
    Start,
    TextDelta,
    ToolCallDelta,
    UsageEvent,
)
from service.errors import DeadlineExceeded, SwitchboardError
from service.state.stores import CacheStore

log = logging.getLogger(__name__)

Produce = Callable[[], AsyncGenerator[Event, None]]
LEASE_MARGIN_S = 5.0
POLL_S = (0.01, 0.2)  # first and longest wait between looks for another replica's answer


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
            cached = await _within(deadline, asyncio.shield(flight))
        mine: asyncio.Future[bytes | None] | None = None
        lease = ""
        try:
            if cached is None and key not in self._flights:
                mine = asyncio.get_running_loop().create_future()
                self._flights[key] = mine
                lease, cached = await self._lead(key, deadline)
                if cached is not None:
                    mine.set_result(cached)
            self._observe(start.agent, cached is not None)
            if cached is not None:
                for event in _replay(cached, start):
                    yield event
                return
            async for event in self._produce(key, ttl_s, produce, mine):
                yield event
        finally:
            if mine is not None:
                if not mine.done():
                    mine.set_result(None)
                self._flights.pop(key, None)
            if lease:
                await self._unlead(key, lease)

    async def _lead(self, key: str, deadline: Deadline) -> tuple[str, bytes | None]:
        """Take the key's fill lease (→ its token, None), or wait for the replica that holds
        it to fill the cache (→ "", the answer)."""
        token = uuid.uuid4().hex
        wait_s = POLL_S[0]
        while True:
            try:
                leading = await self._store.lead(key, token, deadline.remaining() + LEASE_MARGIN_S)
            except SwitchboardError as exc:
                log.warning("response cache lease failed: %s", exc.message)
                return "", None
            # Looked at after taking the lease too: its last holder may have just filled it.
            cached = await self._get(key)
            if cached is not None:
                if leading:
                    await self._unlead(key, token)
                return "", cached
            if leading:
                return token, None
            if deadline.expired:
                raise DeadlineExceeded(
                    "deadline exceeded while waiting for an identical call's answer"
                )
            await asyncio.sleep(min(wait_s, deadline.remaining()))
            wait_s = min(wait_s * 2, POLL_S[1])

    async def _produce(
        self,
        key: str,
        ttl_s: float,
        produce: Produce,
        mine: asyncio.Future[bytes | None] | None,
    ) -> AsyncGenerator[Event, None]:
        body: list[codec.Body] = []
        start: Start | None = None
        events = produce()
        try:
            async for event in events:
                if isinstance(event, Start):
                    start = event
                elif isinstance(event, Finish):
                    # A guard's block is never cached: the next call is judged afresh.
                    if start is not None and event.reason != FinishReason.CONTENT_FILTER:
                        entry = codec.encode(start.target, body, event.reason, event.verdicts)
                        if mine is not None:
                            mine.set_result(entry)
                        await self._put(key, entry, ttl_s)
                elif isinstance(event, TextDelta | ToolCallDelta | UsageEvent):
                    body.append(event)
                yield event
        finally:
            await events.aclose()

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

    async def _unlead(self, key: str, token: str) -> None:
        try:
            await self._store.unlead(key, token)
        except SwitchboardError as exc:  # the lease expires on its own
            log.warning("response cache lease release failed: %s", exc.message)


async def _within(deadline: Deadline, waiting: asyncio.Future[bytes | None]) -> bytes | None:
    try:
        async with asyncio.timeout(deadline.remaining()):
            return await waiting
    except TimeoutError as exc:
        raise DeadlineExceeded(
            "deadline exceeded while waiting for an identical call's answer"
        ) from exc


def _replay(data: bytes, start: Start) -> list[Event]:
    entry = codec.decode(data)
    return [
        Start(start.request_id, start.agent, start.agent_version, entry.target),
        *entry.events,
        Finish(
            entry.reason, attempts=0, cache_hit=True, target=entry.target, verdicts=entry.verdicts
        ),
    ]
