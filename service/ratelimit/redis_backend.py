"""The Redis backend: limits shared by every replica, each decision one atomic Lua script.

The scripts read Redis's own clock (``TIME``), never a replica's, and give every key a TTL.
Keys are ``<prefix>{<tenant>}:...``: the hash tag keeps one tenant's keys in one cluster slot,
so a script may touch them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service.ratelimit.base import NEVER, SLOT_RETRY_S, BackendError, Decision, Rate, Slot
from service.state.redis_client import async_client

POOL_SIZE = 32
"""Connections per process; a burst queues for them (see bench/limiter_bench.py)."""

# Milliseconds throughout. Returns {0} when allowed, else {index (1-based), wait_ms} for the
# limit with the longest wait (wait -1: the cost alone exceeds the limit).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, lease_ms, slot_retry_ms = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local period = 60000
local worst, worst_wait = 0, 0
local new_tats = {}
for i = 1, n do
  local limit, cost = tonumber(ARGV[4 + 2 * i]), tonumber(ARGV[5 + 2 * i])
  local wait
  if cost > limit then
    wait = math.huge
  else
    local ahead = math.max((tonumber(redis.call('GET', KEYS[i])) or now) - now, 0)
      + cost * period / limit
    new_tats[i] = now + ahead
    wait = ahead - period
  end
  if wait > 0.001 and wait > worst_wait then worst, worst_wait = i, wait end
end
for j = 1, m do
  local key, limit = KEYS[n + j], tonumber(ARGV[5 + 2 * n + j])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= limit and slot_retry_ms > worst_wait then
    worst, worst_wait = n + j, slot_retry_ms
  end
end
if worst > 0 then
  if worst_wait == math.huge then return {worst, '-1'} end
  return {worst, string.format('%.3f', worst_wait)}
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.3f', new_tats[i]), 'PX',
             math.ceil(new_tats[i] - now) + 1000)
end
for j = 1, m do
  local key = KEYS[n + j]
  redis.call('ZADD', key, now + lease_ms, lease)
  if redis.call('PTTL', key) < lease_ms + 1000 then
    redis.call('PEXPIRE', key, math.ceil(lease_ms) + 1000)
  end
end
return {0}
"""

_ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local limit, cost = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  tat = tat + cost * 60000 / limit
  if tat > now then
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
  else
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""

_RELEASE = """
for i = 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return 0
"""


class RedisBackend:
    """Built once by the app; one connection pool shared by all calls."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._adjust = client.register_script(_ADJUST)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(
        cls, url: str, key_prefix: str, timeout_s: float, pool_size: int = POOL_SIZE
    ) -> RedisBackend:
        """A backend on its own bounded pool (see :mod:`service.state.redis_client`)."""
        return cls(async_client(url, timeout_s=timeout_s, max_connections=pool_size), key_prefix)

    def _key(self, key: str) -> str:
        tenant, _, rest = key.partition(":")
        return f"{self._prefix}{{{tenant}}}:{rest}"

    async def acquire(
        self, rates: Sequence[Rate], slots: Sequence[Slot], lease_id: str, lease_s: float
    ) -> Decision:
        keys = [self._key(r.key) for r in rates] + [self._key(s.key) for s in slots]
        args: list[Any] = [len(rates), len(slots), lease_id, lease_s * 1000, SLOT_RETRY_S * 1000]
        for rate in rates:
            args += [rate.limit, rate.cost]
        args += [slot.limit for slot in slots]
        result = await self._run(self._acquire, keys, args)
        if int(result[0]) == 0:
            return Decision()
        wait_ms = float(result[1])
        return Decision(int(result[0]) - 1, NEVER if wait_ms < 0 else wait_ms / 1000)

    async def adjust(self, rates: Sequence[Rate]) -> None:
        if rates:
            args: list[Any] = []
            for rate in rates:
                args += [rate.limit, rate.cost]
            await self._run(self._adjust, [self._key(r.key) for r in rates], args)

    async def release(self, slots: Sequence[Slot], lease_id: str) -> None:
        if slots:
            await self._run(self._release, [self._key(s.key) for s in slots], [lease_id])

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise BackendError(f"redis: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self._client.aclose(close_connection_pool=True)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise BackendError(f"redis: {type(exc).__name__}") from exc
