"""Fast shared state on Redis: budget counters (atomic Lua), response cache, idempotency keys.

Every replica talks to the same Redis, so a budget holds across replicas: a reservation is
checked and held by one script, atomically. Reservations carry an expiry (Redis time, so all
replicas agree) and are dropped by the next script that touches the line once expired, so
those a crashed replica left behind stop counting. Keys live under ``<prefix>:``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

from redis.exceptions import RedisError

from service.state.guard import guarded
from service.state.records import BudgetLine, Claim
from service.state.redis_client import async_client

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid, amount, hold = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 3
for i = 0, n - 1 do
  local spent_k, held_k, until_k = KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3]
  local expired = redis.call('ZRANGEBYSCORE', until_k, '-inf', now)
  for _, id in ipairs(expired) do redis.call('HDEL', held_k, id) end
  redis.call('ZREMRANGEBYSCORE', until_k, '-inf', now)
  local held = 0
  for _, v in ipairs(redis.call('HVALS', held_k)) do held = held + tonumber(v) end
  local spent = tonumber(redis.call('GET', spent_k) or '0')
  if spent + held + amount > tonumber(ARGV[4 + 2*i]) then return i end
end
for i = 0, n - 1 do
  local ttl = tonumber(ARGV[5 + 2*i])
  redis.call('HSET', KEYS[3*i+2], rid, amount)
  redis.call('ZADD', KEYS[3*i+3], now + hold, rid)
  redis.call('PEXPIRE', KEYS[3*i+2], ttl)
  redis.call('PEXPIRE', KEYS[3*i+3], ttl)
end
return -1
"""

_SETTLE = """
local rid, amount = ARGV[1], tonumber(ARGV[2])
for i = 0, #KEYS / 3 - 1 do
  redis.call('HDEL', KEYS[3*i+2], rid)
  redis.call('ZREM', KEYS[3*i+3], rid)
  if amount > 0 then
    redis.call('INCRBY', KEYS[3*i+1], amount)
    redis.call('PEXPIRE', KEYS[3*i+1], tonumber(ARGV[3 + i]))
  end
end
return 0
"""

_SPENT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')
local held = 0
for _, id in ipairs(live) do held = held + tonumber(redis.call('HGET', KEYS[2], id) or '0') end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), held}
"""


_UNLEAD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisFast:
    """See the module docstring. One connection pool per process."""

    def __init__(self, url: str, *, prefix: str, timeout_s: float, pool_size: int = 10) -> None:
        self._prefix = prefix
        self._timeout_s = timeout_s
        # A bounded pool that heals after a Redis restart (service.state.redis_client).
        self._redis = async_client(url, timeout_s=timeout_s, max_connections=pool_size)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._spent = self._redis.register_script(_SPENT)
        self._unlead = self._redis.register_script(_UNLEAD)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    def _triples(self, lines: Sequence[BudgetLine]) -> list[str]:
        keys = []
        for line in lines:
            base = self._key(f"budget:{line.key}")
            keys += [f"{base}:spent", f"{base}:held", f"{base}:until"]
        return keys

    async def reserve(
        self, lines: Sequence[BudgetLine], reservation: str, amount: int, hold_s: float
    ) -> int:
        args: list[str | int] = [reservation, amount, _ms(hold_s)]
        for line in lines:
            args += [line.limit_nanos, _ms(line.ttl_s)]
        async with guarded("redis", self._timeout_s, (RedisError,)):
            result = await self._reserve(keys=self._triples(lines), args=args)
        return int(result)

    async def settle(self, lines: Sequence[BudgetLine], reservation: str, amount: int) -> None:
        args: list[str | int] = [reservation, amount, *(_ms(line.ttl_s) for line in lines)]
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._settle(keys=self._triples(lines), args=args)

    async def release(self, lines: Sequence[BudgetLine], reservation: str) -> None:
        await self.settle(lines, reservation, 0)

    async def spent(self, line: BudgetLine) -> tuple[int, int]:
        async with guarded("redis", self._timeout_s, (RedisError,)):
            spent, held = await self._spent(keys=self._triples([line]), args=[])
        return int(spent), int(held)

    async def seed(self, line: BudgetLine, spent: int) -> None:
        spent_key = self._triples([line])[0]
        async with guarded("redis", self._timeout_s, (RedisError,)):
            await self._redis.set(spent_key, spent, nx=True, px=_ms(line.ttl_s))

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
