"""Budget counters on Redis, shared by every replica: each operation is one atomic Lua script.

Per budget line (``<prefix>:budget:<line key>:``): ``spent`` (nano-dollars the ledger holds),
``held`` (a hash of holds: reservations of calls in flight, ``r...``, and ledger lines waiting
in an outbox, ``ob:<line id>``), ``until`` (when each hold expires, Redis time) and ``sum``
(the holds' total, kept beside them so no script adds up every hold). Expired holds are dropped
by the next script that touches the line, so a crashed replica's holds stop counting.

The counters are a cache of the ledger. The ``budget-epoch`` key names their generation:
``<random>:<ready ms>``. When Redis loses the counters (restart, flush, failover) the key is
gone; the first replica to notice starts a new generation that admits nothing until ``ready``,
the rebuild time in which every replica holds again its calls in flight and its outbox lines
(:mod:`service.usage.budgets`). A line without ``spent`` is rebuilt from the ledger under a
fence: ``begin_seed`` takes the seeding lease, spend that lands meanwhile goes to ``pre``,
and ``end_seed`` sets ``spent`` to the ledger's sum plus ``pre``; a line is never admitted
on while it is seeded. Amounts are integers; times are Redis's own clock, so replicas agree.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.state.guard import guarded
from service.state.records import BudgetLine

_PARTS = ("spent", "held", "until", "sum", "seeding", "pre")  # a line's keys, in order

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function key(i, part) return KEYS[6 * i + part] end
local function expire(i)
  local gone = redis.call('ZRANGEBYSCORE', key(i, 3), '-inf', now)
  if #gone == 0 then return end
  local freed = 0
  for _, id in ipairs(gone) do
    freed = freed + tonumber(redis.call('HGET', key(i, 2), id) or '0')
    redis.call('HDEL', key(i, 2), id)
  end
  redis.call('ZREMRANGEBYSCORE', key(i, 3), '-inf', now)
  if freed ~= 0 then redis.call('DECRBY', key(i, 4), freed) end
end
local function put(i, id, amount, until_ms, ttl)
  local old = tonumber(redis.call('HGET', key(i, 2), id) or '0')
  redis.call('HSET', key(i, 2), id, amount)
  redis.call('ZADD', key(i, 3), until_ms, id)
  redis.call('INCRBY', key(i, 4), amount - old)
  for part = 2, 4 do redis.call('PEXPIRE', key(i, part), ttl) end
end
local function drop(i, id)
  local old = redis.call('HGET', key(i, 2), id)
  if not old then return false end
  redis.call('HDEL', key(i, 2), id)
  redis.call('ZREM', key(i, 3), id)
  redis.call('DECRBY', key(i, 4), tonumber(old))
  return true
end
-- Spend on a line: to the counter, or to the fence of a seed under way; false when the
-- line has neither (a later seed reads it from the ledger).
local function spend(i, amount, ttl)
  if redis.call('EXISTS', key(i, 1)) == 1 then
    if amount > 0 then
      redis.call('INCRBY', key(i, 1), amount)
      redis.call('PEXPIRE', key(i, 1), ttl)
    end
    return true
  end
  if redis.call('EXISTS', key(i, 5)) == 1 then
    redis.call('INCRBY', key(i, 6), amount)
    return true
  end
  return false
end
local lines = (#KEYS - 1) / 6
"""

# KEYS: 6 per line, then the epoch key. ARGV: id, amount, hold ms, epoch, then per line:
# limit, ttl ms. Returns -2 (rebuild first), <= -3 (wait -3 - result ms), or the index of
# the first line without room; else goes on (every line has room for ``amount``).
_ADMIT = (
    _PRELUDE
    + """
local id, amount, hold, epoch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if redis.call('GET', KEYS[#KEYS]) ~= epoch then return -2 end
for i = 0, lines - 1 do
  if redis.call('EXISTS', key(i, 1)) == 0 then return -2 end
end
local ready = tonumber(string.match(epoch, ':(%d+)$') or '0')
if now < ready then return -3 - (ready - now) end
for i = 0, lines - 1 do
  expire(i)
  local held = tonumber(redis.call('GET', key(i, 4)) or '0')
  local spent = tonumber(redis.call('GET', key(i, 1)))
  if spent + held + amount > tonumber(ARGV[5 + 2 * i]) then return i end
end
"""
)

# As _ADMIT, then holds ``amount`` on every line under ``id``: -1.
_RESERVE = (
    _ADMIT
    + """
for i = 0, lines - 1 do put(i, id, amount, now + hold, tonumber(ARGV[6 + 2 * i])) end
return -1
"""
)

# As _RESERVE, but adds ``amount`` to the reservation's hold (an extra attempt of the call),
# keeping its expiry.
_GROW = (
    _ADMIT
    + """
for i = 0, lines - 1 do
  local old = tonumber(redis.call('HGET', key(i, 2), id) or '0')
  local until_ms = tonumber(redis.call('ZSCORE', key(i, 3), id) or (now + hold))
  put(i, id, old + amount, until_ms, tonumber(ARGV[6 + 2 * i]))
end
return -1
"""
)

# ARGV: id, amount, hold ms, then a ttl ms per line.
_HOLD = (
    _PRELUDE
    + """
for i = 0, lines - 1 do
  expire(i)
  put(i, ARGV[1], tonumber(ARGV[2]), now + tonumber(ARGV[3]), tonumber(ARGV[4 + i]))
end
return 0
"""
)

# ARGV: reservation, amount, then a ttl ms per line. Returns 1 when a line had neither a
# counter nor a seed under way (the caller seeds it: the ledger holds this call's line).
_SETTLE = (
    _PRELUDE
    + """
local missing = 0
for i = 0, lines - 1 do
  drop(i, ARGV[1])
  if not spend(i, tonumber(ARGV[2]), tonumber(ARGV[3 + i])) then missing = 1 end
end
return missing
"""
)

# ARGV: reservation, ledger line id, amount, then a ttl ms per line: the reservation becomes
# the hold of a line waiting in an outbox, kept as long as the line's period.
_PENDING = (
    _PRELUDE
    + """
for i = 0, lines - 1 do
  drop(i, ARGV[1])
  local ttl = tonumber(ARGV[4 + i])
  put(i, 'ob:' .. ARGV[2], tonumber(ARGV[3]), now + ttl, ttl)
end
return 0
"""
)

# ARGV: ledger line id, amount, the caller's epoch, then a ttl ms per line. The line reached
# the ledger: its hold becomes spend. Without a hold, in an epoch the caller has not held its
# outbox in, the line may have been counted nowhere: spend it (at worst twice, never zero).
_LANDED = (
    _PRELUDE
    + """
local stale = redis.call('GET', KEYS[#KEYS]) ~= ARGV[3]
for i = 0, lines - 1 do
  if drop(i, 'ob:' .. ARGV[1]) or stale then spend(i, tonumber(ARGV[2]), tonumber(ARGV[4 + i])) end
end
return stale and 1 or 0
"""
)

# ARGV: token, lease ms, ttl ms. 1: the caller seeds; 0: the line has a counter; -1: another
# seed is under way.
_BEGIN_SEED = (
    _PRELUDE
    + """
if redis.call('EXISTS', key(0, 1)) == 1 then return 0 end
local holder = redis.call('GET', key(0, 5))
if holder and holder ~= ARGV[1] then return -1 end
redis.call('SET', key(0, 5), ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('SET', key(0, 6), 0, 'PX', tonumber(ARGV[3]))
return 1
"""
)

# ARGV: token, the ledger's sum, ttl ms. 1: seeded; 0: the lease was lost (seed again).
_END_SEED = (
    _PRELUDE
    + """
if redis.call('GET', key(0, 5)) ~= ARGV[1] then return 0 end
local landed = tonumber(redis.call('GET', key(0, 6)) or '0')
redis.call('SET', key(0, 1), tonumber(ARGV[2]) + landed, 'PX', tonumber(ARGV[3]))
redis.call('DEL', key(0, 5), key(0, 6))
return 1
"""
)

_SPENT = (
    _PRELUDE
    + """
expire(0)
local spent = redis.call('GET', key(0, 1))
return {tonumber(spent or '0'), tonumber(redis.call('GET', key(0, 4)) or '0')}
"""
)

_EPOCH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  epoch = ARGV[1] .. ':' .. (now + tonumber(ARGV[2]))
  redis.call('SET', KEYS[1], epoch)
end
return epoch
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisBudgets:
    """The budget store (:class:`service.state.stores.BudgetStore`) on one Redis client."""

    def __init__(self, client: Redis, *, prefix: str, timeout_s: float) -> None:
        self._budget_prefix = prefix
        self._budget_timeout_s = timeout_s
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "reserve": _RESERVE,
                "grow": _GROW,
                "hold": _HOLD,
                "settle": _SETTLE,
                "pending": _PENDING,
                "landed": _LANDED,
                "begin_seed": _BEGIN_SEED,
                "end_seed": _END_SEED,
                "spent": _SPENT,
                "epoch": _EPOCH,
            }.items()
        }

    def _keys(self, lines: Sequence[BudgetLine]) -> list[str]:
        keys = []
        for line in lines:
            base = f"{self._budget_prefix}:budget:{line.key}"
            keys += [f"{base}:{part}" for part in _PARTS]
        return [*keys, f"{self._budget_prefix}:budget-epoch"]

    async def _run(self, script: str, lines: Sequence[BudgetLine], args: list[Any]) -> Any:
        async with guarded("redis", self._budget_timeout_s, (RedisError,)):
            return await self._scripts[script](keys=self._keys(lines), args=args)

    async def epoch(self, rebuild_s: float = 0.0) -> str:
        async with guarded("redis", self._budget_timeout_s, (RedisError,)):
            value = await self._scripts["epoch"](
                keys=[f"{self._budget_prefix}:budget-epoch"],
                args=[uuid.uuid4().hex, _ms(rebuild_s) if rebuild_s > 0 else 0],
            )
        return value.decode() if isinstance(value, bytes) else str(value)

    async def reserve(
        self, lines: Sequence[BudgetLine], reservation: str, amount: int, hold_s: float, epoch: str
    ) -> int:
        args: list[Any] = [reservation, amount, _ms(hold_s), epoch]
        for line in lines:
            args += [line.limit_nanos, _ms(line.ttl_s)]
        return int(await self._run("reserve", lines, args))

    async def grow(
        self, lines: Sequence[BudgetLine], reservation: str, amount: int, hold_s: float, epoch: str
    ) -> int:
        args: list[Any] = [reservation, amount, _ms(hold_s), epoch]
        for line in lines:
            args += [line.limit_nanos, _ms(line.ttl_s)]
        return int(await self._run("grow", lines, args))

    async def hold(
        self, lines: Sequence[BudgetLine], hold_id: str, amount: int, hold_s: float
    ) -> None:
        args = [hold_id, amount, _ms(hold_s), *(_ms(line.ttl_s) for line in lines)]
        await self._run("hold", lines, args)

    async def settle(self, lines: Sequence[BudgetLine], reservation: str, amount: int) -> bool:
        args = [reservation, amount, *(_ms(line.ttl_s) for line in lines)]
        return bool(int(await self._run("settle", lines, args)))

    async def settle_pending(
        self, lines: Sequence[BudgetLine], reservation: str, line_id: str, amount: int
    ) -> None:
        args = [reservation, line_id, amount, *(_ms(line.ttl_s) for line in lines)]
        await self._run("pending", lines, args)

    async def landed(
        self, lines: Sequence[BudgetLine], line_id: str, amount: int, epoch: str
    ) -> None:
        args = [line_id, amount, epoch, *(_ms(line.ttl_s) for line in lines)]
        await self._run("landed", lines, args)

    async def release(self, lines: Sequence[BudgetLine], reservation: str) -> None:
        await self.settle(lines, reservation, 0)

    async def spent(self, line: BudgetLine) -> tuple[int, int]:
        spent, held = await self._run("spent", [line], [])
        return int(spent), int(held)

    async def begin_seed(self, line: BudgetLine, token: str, lease_s: float) -> int:
        args = [token, _ms(lease_s), _ms(line.ttl_s)]
        return int(await self._run("begin_seed", [line], args))

    async def end_seed(self, line: BudgetLine, token: str, spent: int) -> bool:
        return bool(int(await self._run("end_seed", [line], [token, spent, _ms(line.ttl_s)])))
