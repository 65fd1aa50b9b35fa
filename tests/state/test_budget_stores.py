"""Budget counters from every fast-state backend (memory and Redis): reservations, growth,
seeding under a fence, outbox holds and epochs (service/state/stores.py's budget part)."""

from __future__ import annotations

import asyncio

import pytest

from service.state.records import NEEDS_SEED, WAIT, BudgetLine
from service.state.redis import RedisFast
from service.state.stores import Fast
from tests.backends import REDIS_URL, redis_prefix
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio


DAY = BudgetLine("tenant:t:daily:2026-01-01", limit_nanos=100, ttl_s=3600)
KEY = BudgetLine("tenant:t:key:k:2026-01", limit_nanos=30, ttl_s=3600)


async def _seed(fast: Fast, line: BudgetLine, spent: int) -> None:
    assert await fast.begin_seed(line, "t", 5) == 1
    assert await fast.end_seed(line, "t", spent) is True


async def _seeded(fast: Fast, *lines: BudgetLine) -> str:
    """The store's epoch, with ``lines`` seeded at 0 spent."""
    for line in lines:
        await _seed(fast, line, 0)
    return await fast.epoch()


async def test_budget_reserve_settle_release(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    assert await fast.reserve([DAY], "r1", 60, 60, e) == -1
    assert await fast.spent(DAY) == (0, 60)
    assert await fast.reserve([DAY], "r2", 50, 60, e) == 0  # 60 held + 50 > 100
    assert await fast.spent(DAY) == (0, 60)

    assert await fast.settle([DAY], "r1", 20) is False
    assert await fast.spent(DAY) == (20, 0)
    assert await fast.reserve([DAY], "r2", 50, 60, e) == -1
    await fast.release([DAY], "r2")
    assert await fast.spent(DAY) == (20, 0)


async def test_budget_reserves_all_lines_or_none(fast: Fast) -> None:
    e = await _seeded(fast, DAY, KEY)
    assert await fast.reserve([DAY, KEY], "r1", 40, 60, e) == 1  # the key line has 30
    assert await fast.spent(DAY) == (0, 0)
    assert await fast.reserve([DAY, KEY], "r2", 30, 60, e) == -1
    assert await fast.spent(KEY) == (0, 30)


async def test_concurrent_reservations_never_overbook(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    results = await asyncio.gather(*(fast.reserve([DAY], f"r{i}", 7, 60, e) for i in range(40)))
    assert results.count(-1) == 100 // 7
    assert await fast.spent(DAY) == (0, 7 * (100 // 7))


async def test_expired_reservations_stop_counting(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    assert await fast.reserve([DAY], "crashed", 90, 0.05, e) == -1

    async def freed() -> bool:
        return await fast.reserve([DAY], "next", 90, 60, e) == -1

    await eventually(freed)
    assert await fast.spent(DAY) == (0, 90)


async def test_grow_adds_to_a_reservation_on_all_lines_or_none(fast: Fast) -> None:
    e = await _seeded(fast, DAY, KEY)
    assert await fast.reserve([DAY, KEY], "r", 10, 0.3, e) == -1
    assert await fast.grow([DAY, KEY], "r", 15, 60, e) == -1  # another attempt of the call
    assert await fast.spent(KEY) == (0, 25)
    assert await fast.grow([DAY, KEY], "r", 10, 60, e) == 1  # the key line has 5 left
    assert await fast.spent(DAY) == (0, 25)
    assert await fast.grow([DAY], "r", 1, 60, "an-epoch-that-ended") == NEEDS_SEED

    async def expired() -> bool:  # the reservation's expiry, not the attempt's hold_s
        return await fast.spent(DAY) == (0, 0)

    await eventually(expired)
    assert await fast.grow([DAY], "r", 5, 60, e) == -1  # none left: held anew
    assert await fast.settle([DAY], "r", 4) is False
    assert await fast.spent(DAY) == (4, 0)


async def test_a_line_without_a_counter_admits_nothing_until_seeded(fast: Fast) -> None:
    e = await fast.epoch()
    assert await fast.reserve([DAY], "r", 1, 60, e) == NEEDS_SEED
    await _seed(fast, DAY, 0)
    assert await fast.reserve([DAY, KEY], "r", 1, 60, e) == NEEDS_SEED  # KEY has none
    assert await fast.spent(DAY) == (0, 0)  # all or nothing
    await _seed(fast, KEY, 0)
    assert await fast.reserve([DAY, KEY], "r", 1, 60, e) == -1


async def test_another_epoch_admits_nothing(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    assert await fast.epoch() == e  # stable while the counters live
    assert await fast.reserve([DAY], "r", 1, 60, "an-epoch-that-ended") == NEEDS_SEED
    assert await fast.reserve([DAY], "r", 1, 60, "") == NEEDS_SEED


async def test_a_seed_is_fenced_and_counts_what_lands_meanwhile(fast: Fast) -> None:
    e = await fast.epoch()
    assert await fast.begin_seed(DAY, "mine", 5) == 1
    assert await fast.begin_seed(DAY, "theirs", 5) == -1  # one seed at a time
    assert await fast.reserve([DAY], "r", 1, 60, e) == NEEDS_SEED  # not while it is seeded
    # Spend that lands while the ledger is read is kept, not lost to the seed.
    assert await fast.settle([DAY], "x", 20) is False
    assert await fast.end_seed(DAY, "theirs", 999) is False
    assert await fast.end_seed(DAY, "mine", 50) is True
    assert await fast.spent(DAY) == (70, 0)
    assert await fast.begin_seed(DAY, "again", 5) == 0  # it has a counter now
    assert await fast.reserve([DAY], "r", 31, 60, e) == 0
    assert await fast.reserve([DAY], "r", 30, 60, e) == -1


async def test_a_line_waiting_in_an_outbox_is_held_until_it_lands(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    assert await fast.reserve([DAY], "r", 60, 60, e) == -1
    await fast.settle_pending([DAY], "r", "line-1", 25)  # the reservation becomes its hold
    assert await fast.spent(DAY) == (0, 25)
    await fast.landed([DAY], "line-1", 25, e)
    assert await fast.spent(DAY) == (25, 0)
    await fast.landed([DAY], "line-1", 25, e)  # once only
    assert await fast.spent(DAY) == (25, 0)
    # A line never held in this epoch (its process had not held its outbox again): spent.
    await fast.landed([DAY], "line-2", 10, "an-epoch-that-ended")
    assert await fast.spent(DAY) == (35, 0)


async def test_a_settlement_never_recreates_a_lost_counter(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    other = BudgetLine("tenant:u:daily:2026-01-01", limit_nanos=100, ttl_s=3600)
    # A counter that is gone would come back holding this call's cost alone: refused.
    assert await fast.settle([other], "r", 100) is True
    assert await fast.reserve([other], "r", 1, 60, e) == NEEDS_SEED
    assert await fast.settle([DAY], "r", 100) is False
    assert await fast.spent(DAY) == (100, 0)


async def test_hold_holds_without_checking(fast: Fast) -> None:
    e = await _seeded(fast, DAY)
    await fast.settle([DAY], "x", 90)
    await fast.hold([DAY], "again", 50, 60)  # a reservation held again after a loss
    await fast.hold([DAY], "again", 50, 60)  # idempotent
    assert await fast.spent(DAY) == (90, 50)
    assert await fast.reserve([DAY], "r", 1, 60, e) == 0


async def test_a_new_redis_epoch_admits_nothing_for_its_rebuild_time() -> None:
    async with redis_prefix() as prefix:
        fast = RedisFast(REDIS_URL, prefix=prefix, timeout_s=5)
        try:
            e = await fast.epoch(0.3)
            await _seed(fast, DAY, 0)
            waited = await fast.reserve([DAY], "r", 1, 60, e)
            assert WAIT - 300 <= waited <= WAIT  # ms left of the rebuild time
            assert await fast.spent(DAY) == (0, 0)

            async def admitted() -> bool:
                return await fast.reserve([DAY], "r", 1, 60, e) == -1

            await eventually(admitted)
            assert await fast.epoch(0.3) == e  # started once
        finally:
            await fast.aclose()
