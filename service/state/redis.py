"""Fast shared state on Redis: budget counters (:mod:`service.state.redis_budgets`: atomic
Lua, shared by every replica), response cache and its fill leases, idempotency keys (the fast
path in front of PostgreSQL's records). Keys live under ``<prefix>:``.
"""

from __future__ import annotations

import json
import math

from redis.exceptions import RedisError

from service.state.guard import guarded
from service.state.records import Claim
from service.state.redis_budgets import RedisBudgets
from service.state.redis_client import async_client

_UNLEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisFast(RedisBudgets):
    """See the module docstring. One connection pool per process."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float, pool_size: int = 10) -> None:
        self._prefix = prefix
        self._timeout_s = timeout_s
        # A bounded pool that heals after a Redis restart (service.state.redis_client).
        self._redis = async_client(url, timeout_s=timeout_s, max_connections=pool_size)
        super().__init__(self._redis, prefix=prefix, timeout_s=timeout_s)
        self._unlead = self._redis.register_script(_UNLEAD)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def get(self, key: str) -> bytes | None:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            value = await self._redis.get(self._key(f"cache:{key}"))
        return None if value is None else value if isinstance(value, bytes) else value.encode()

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._redis.set(self._key(f"cache:{key}"), value, px=_ms(ttl_s))

    async def lead(self, key: str, token: str, lease_s: float) -> bool:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            taken = await self._redis.set(
                self._key(f"cache-lease:{key}"), token, nx=True, px=_ms(lease_s)
            )
        return bool(taken)

    async def unlead(self, key: str, token: str) -> None:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._unlead(keys=[self._key(f"cache-lease:{key}")], args=[token])

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        name = self._key(f"idem:{key}")
        pending = json.dumps({"s": "pending", "f": fingerprint})
        async with guarded("redis", self._timeout_s, (RedisError,)):
            for _ in range(3):
                if await self._redis.set(name, pending, nx=True, px=_ms(lease_s)):
                    return Claim("new", fingerprint)
                raw = await self._redis.get(name)
                if raw is not None:
                    held = json.loads(raw)
                    result = held.get("r")
                    return Claim(
                        held["s"],
                        held["f"],
                        None if result is None else bytes.fromhex(result),
                    )
        # Taken and freed three times in a row: report it as held; the caller waits.
        return Claim("pending", "")

    async def complete(self, key: str, fingerprint: str, result: bytes, ttl_s: float) -> None:
        done = json.dumps({"s": "done", "f": fingerprint, "r": result.hex()})
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._redis.set(self._key(f"idem:{key}"), done, px=_ms(ttl_s))

    async def abandon(self, key: str) -> None:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._redis.delete(self._key(f"idem:{key}"))

    async def ping(self) -> None:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose(close_connection_pool=True)
