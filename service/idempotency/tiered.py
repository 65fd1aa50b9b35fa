"""Idempotency records kept durably, with a cache in front for the answers.

The durable store (PostgreSQL in the shared mode) is the authority: it takes a request id
and keeps the recorded answer, so a loss of Redis (restart, flush, eviction, failover) never
lets a retried request id run and be charged again. Redis only serves recorded answers fast:
a retry whose answer is cached is answered without a round trip to the database.
"""

from __future__ import annotations

import json
import logging

from service.errors import SwitchboardError
from service.state.records import Claim
from service.state.stores import CacheStore, IdempotencyStore

log = logging.getLogger(__name__)


def _cache_key(key: str) -> str:
    return f"idem-done:{key}"


class TieredIdempotency:
    """See the module docstring. ``durable`` decides; ``cache`` holds copies of answers."""

    def __init__(self, durable: IdempotencyStore, cache: CacheStore) -> None:
        self._durable = durable
        self._cache = cache

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        """Raises Unavailable when the durable store does not answer (a cache that does
        not answer is skipped)."""
        try:
            cached = await self._cache.get(_cache_key(key))
        except SwitchboardError as exc:
            log.warning("idempotency cache unavailable: %s", exc.message)
            cached = None
        if cached is not None:
            held = json.loads(cached)
            return Claim("done", held["f"], bytes.fromhex(held["r"]))
        return await self._durable.claim(key, fingerprint, lease_s)

    async def complete(self, key: str, fingerprint: str, result: bytes, ttl_s: float) -> None:
        """Durable first; the cached copy is best effort. Raises Unavailable when the durable
        store does not answer (after caching the answer, so retries still find it while the
        cache keeps it)."""
        done = json.dumps({"f": fingerprint, "r": result.hex()}).encode()
        try:
            await self._cache.put(_cache_key(key), done, ttl_s)
        except SwitchboardError as exc:
            log.warning("idempotency cache unavailable: %s", exc.message)
        await self._durable.complete(key, fingerprint, result, ttl_s)

    async def abandon(self, key: str) -> None:
        await self._durable.abandon(key)
