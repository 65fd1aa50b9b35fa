"""A call is charged on the budget lines its reservation bound (issue 12): the budgets, and the
UTC periods, of the moment it was admitted. A call reserved just before midnight (here also the
month's end) whose ledger line waits in the outbox and lands after it, or after a budget
reload, or in the next run of the process, leaves every line exact: the period it was admitted
in spends it once, nothing stays held, and no other period or budget is charged. The ledger
agrees: a counter rebuilt from it counts the call in the same period.

Real parts: the memory store and Redis, the SQLite ledger behind a switch that plays its
outage, the SQLite outbox, the recorder; the budgets' wall clock is the test's.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from service.config.state_model import BudgetConfig
from service.errors import Unavailable
from service.state.memory import MemoryFast
from service.state.outbox import Outbox
from service.state.records import AuditEntry, BudgetLine, UsageRecord, UsageTotal
from service.state.redis import RedisFast
from service.state.sqlite import SqliteDurable
from service.state.stores import Fast
from service.usage.budgets import Budgets, Reservation, binding
from service.usage.ledger import Ledger
from service.usage.recorder import Recorder
from tests.backends import REDIS_URL, redis_prefix

pytestmark = pytest.mark.asyncio

BEFORE = datetime(2026, 11, 30, 23, 59, 59, 500_000, tzinfo=UTC).timestamp()
AFTER = datetime(2026, 12, 1, 0, 0, 0, 500_000, tzinfo=UTC).timestamp()
NOV_30 = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
DEC_2 = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
COST = 700_000_000  # nano-dollars a call costs
BOUND = 900_000_000  # and reserves

BUDGETS = [
    BudgetConfig(name="daily", period="day", limit_usd=5),
    BudgetConfig(name="monthly", period="month", per_key=True, limit_usd=50),
]
# A reload while the call runs: a new limit (the same line), per key no more (another line).
RELOADED = [
    BudgetConfig(name="daily", period="day", limit_usd=6),
    BudgetConfig(name="monthly", period="month", limit_usd=50),
]
LINES = {
    "nov_30": "acme:daily:2026-11-30",
    "nov_key": "acme:monthly:2026-11:key:k1",
    "nov": "acme:monthly:2026-11",
    "dec_1": "acme:daily:2026-12-01",
    "dec_key": "acme:monthly:2026-12:key:k1",
    "dec": "acme:monthly:2026-12",
}


class Switched:
    """The SQLite ledger, refusing (``Unavailable``) while ``down``: the durable store's
    outage."""

    def __init__(self, store: SqliteDurable) -> None:
        self.store = store
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("the durable store is down")

    async def record_usage(self, record: UsageRecord, audit: AuditEntry | None = None) -> None:
        self._check()
        await self.store.record_usage(record, audit)

    async def totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        self._check()
        return await self.store.totals(tenant, start, end, group_by)

    async def audit(self, entry: AuditEntry) -> None:
        self._check()
        await self.store.audit(entry)

    async def recent_audit(self, tenant: str, limit: int) -> list[AuditEntry]:
        self._check()
        return await self.store.recent_audit(tenant, limit)


@dataclass
class Process:
    """One run of the service's money path: budgets over ``fast``, the ledger and its
    outbox in ``data_dir``, the recorder; the wall clock and the budgets configured are the
    test's."""

    fast: Fast
    durable: Switched
    data_dir: Path
    now: list[float] = field(default_factory=lambda: [BEFORE])
    configs: list[Sequence[BudgetConfig]] = field(default_factory=lambda: [BUDGETS])

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.durable, Outbox(self.data_dir, timeout_s=5))
        self.budgets = Budgets(
            self.fast,
            hold_s=60,
            books=self.ledger,
            configs=lambda: self.configs[0],
            clock=lambda: self.now[0],
        )
        self.ledger.on_landed = self.budgets.landed
        self.recorder = Recorder(self.ledger, self.budgets)

    async def reserve(self) -> Reservation:
        held = await self.budgets.reserve(self.configs[0], "acme", "k1", BOUND)
        assert held is not None
        return held

    async def record(self, reservation: Reservation) -> None:
        """The call ends now: its line (as the pipeline makes it) is recorded, then its
        reservation settled."""
        at, budget_lines = binding(reservation, self.now[0])
        line = UsageRecord(
            at=at, tenant="acme", key_id="k1", request_id=secrets.token_hex(4),
            agent="a", target="t", model="m", input_tokens=1, output_tokens=1,
            cost_nanos=COST, status="ok", latency_ms=1000, cache_hit=False,
            line_id=secrets.token_hex(16), budget_lines=budget_lines,
        )  # fmt: skip
        audit = AuditEntry(self.now[0], "acme", "k1", line.request_id, "call", "agent:a", "ok")
        await self.recorder.record(line, audit, reservation)

    async def landed(self) -> None:
        """Wait for the outbox's replay (started when a line went there) to land it all."""

        give_up = time.monotonic() + 10
        while await self.ledger.outbox.count():
            assert time.monotonic() < give_up, "the outbox was never replayed"
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        await self.ledger.aclose()
        await self.budgets.aclose()


async def _lines(fast: Fast) -> dict[str, tuple[int, int]]:
    """(spent, held) of every line this story may touch."""
    return {name: await fast.spent(BudgetLine(key, 0, 60)) for name, key in LINES.items()}


def _only(**lines: tuple[int, int]) -> dict[str, tuple[int, int]]:
    return {name: lines.get(name, (0, 0)) for name in LINES}


async def _ledger_cost(durable: Switched, start: float, end: float) -> int:
    return sum(t.cost_nanos for t in await durable.store.totals("acme", start, end, []))


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[Switched]:
    store = SqliteDurable(tmp_path / "db", timeout_s=5)
    await store.migrate()
    try:
        yield Switched(store)
    finally:
        await store.aclose()


async def test_a_call_across_midnight_lands_from_the_outbox_on_the_lines_it_reserved(
    fast: Fast, sqlite: Switched, tmp_path: Path
) -> None:
    run = Process(fast, sqlite, tmp_path)
    try:
        reservation = await run.reserve()  # 23:59:59.5, on November's lines
        run.now[0] = AFTER
        run.configs[0] = RELOADED
        sqlite.down = True
        await run.record(reservation)  # 00:00:00.5: to the outbox, held where it was reserved
        assert await run.ledger.outbox.count() == 1
        assert await _lines(fast) == _only(nov_30=(0, COST), nov_key=(0, COST))
        sqlite.down = False
        await run.landed()
        assert await _lines(fast) == _only(nov_30=(COST, 0), nov_key=(COST, 0))
        # The ledger dates it where it was charged: a rebuilt counter agrees.
        assert await _ledger_cost(sqlite, NOV_30, DEC_1) == COST
        assert await _ledger_cost(sqlite, DEC_1, DEC_2) == 0
    finally:
        await run.aclose()


async def test_the_next_run_holds_and_lands_the_outbox_on_the_lines_reserved(
    fast: Fast, sqlite: Switched, tmp_path: Path
) -> None:
    first = Process(fast, sqlite, tmp_path)
    try:
        reservation = await first.reserve()
        first.now[0] = AFTER
        sqlite.down = True
        await first.record(reservation)
    finally:
        await first.aclose()  # stopped with the line in the outbox
    # The next run: after midnight, with the reloaded budgets; the memory store's counters
    # died with the first run, Redis's did not.
    survived = isinstance(fast, RedisFast)
    fast = fast if survived else MemoryFast()
    second = Process(fast, sqlite, tmp_path, now=[AFTER], configs=[RELOADED])
    try:
        await second.budgets.check_epoch()  # holds its outbox's line again, where it was held
        assert await _lines(fast) == _only(nov_30=(0, COST), nov_key=(0, COST))
        sqlite.down = False
        own = await second.reserve()  # December's counters, seeded from the ledger
        held = _only(nov_30=(0, COST), nov_key=(0, COST), dec_1=(0, BOUND), dec=(0, BOUND))
        assert await _lines(fast) == held
        second.ledger.start()
        await second.landed()
        await second.record(own)
        # November spends its call once (the memory store lost November's counter: it has
        # none to spend on, and is rebuilt from the ledger when next used); nothing is held.
        november = (COST, 0) if survived else (0, 0)
        spent = _only(nov_30=november, nov_key=november, dec_1=(COST, 0), dec=(COST, 0))
        assert await _lines(fast) == spent
        assert await _ledger_cost(sqlite, NOV_30, DEC_1) == COST
        assert await _ledger_cost(sqlite, DEC_1, DEC_2) == COST
    finally:
        await second.aclose()


async def test_a_counter_lost_across_midnight_is_rebuilt_with_its_own_period(
    sqlite: Switched, tmp_path: Path
) -> None:
    async with redis_prefix() as prefix:
        fast = RedisFast(REDIS_URL, prefix=prefix, timeout_s=5)
        run = Process(fast, sqlite, tmp_path)
        try:
            late = await run.reserve()  # before midnight: November's lines
            run.now[0] = AFTER
            early = await run.reserve()  # after it: December's
            await run.record(early)
            both = _only(nov_30=(0, BOUND), nov_key=(0, BOUND), dec_1=(COST, 0), dec_key=(COST, 0))
            assert await _lines(fast) == both
            await _flush(prefix)  # Redis lost every counter and hold
            await run.record(late)  # its lines have no counter: rebuilt from the ledger
            assert await _lines(fast) == _only(nov_30=(COST, 0), nov_key=(COST, 0))
            await run.reserve()  # December's, rebuilt: the call before midnight is not there
            rebuilt = _only(
                nov_30=(COST, 0), nov_key=(COST, 0), dec_1=(COST, BOUND), dec_key=(COST, BOUND)
            )
            assert await _lines(fast) == rebuilt
        finally:
            await run.aclose()
            await fast.aclose()


async def _flush(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        await client.delete(*keys)
    finally:
        await client.aclose()
