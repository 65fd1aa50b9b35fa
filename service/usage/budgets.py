"""Budgets: reserve a call's estimated cost before it runs, settle to the real cost after.

A budget limits a tenant (or each API key of a tenant) per UTC day or month. The reservation
is checked and held atomically on every applicable budget at once (across replicas when the
store is Redis), so a burst cannot overspend: each call's estimate is held until it settles,
and the estimate is an upper bound of its cost. Reservations that are never settled (the
replica crashed) expire after ``hold_s``.
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from service.config.state_model import BudgetConfig
from service.errors import QuotaViolation, Reason, ResourceExhausted
from service.state.records import BudgetLine
from service.state.stores import BudgetStore, UsageLedger
from service.usage.pricing import usd

# Counters are kept a day past their period, so late settlements still land.
KEEP_AFTER_PERIOD_S = 86400.0
MAX_SEEDED = 100_000  # lines remembered as read back from the ledger in this process


@dataclass(frozen=True, slots=True)
class Bound:
    """A budget that binds a caller now: its config, store line and period."""

    budget: BudgetConfig
    line: BudgetLine
    started_at: float  # unix seconds
    left_s: float


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    lines: tuple[BudgetLine, ...]
    amount: int


def _period(period: str, now: float) -> tuple[str, float, float]:
    """(the period's id, its start, seconds until it ends) at ``now``."""
    at = datetime.fromtimestamp(now, UTC)
    if period == "day":
        start = datetime(at.year, at.month, at.day, tzinfo=UTC).timestamp()
        return at.strftime("%Y-%m-%d"), start, start + 86400 - now
    days = calendar.monthrange(at.year, at.month)[1]
    start = datetime(at.year, at.month, 1, tzinfo=UTC).timestamp()
    return at.strftime("%Y-%m"), start, start + days * 86400 - now


def applicable(
    budgets: Sequence[BudgetConfig], tenant: str, key_id: str, now: float
) -> list[Bound]:
    """The budgets binding this caller now."""
    out = []
    for budget in budgets:
        if budget.tenant not in ("*", tenant):
            continue
        period_id, started_at, left_s = _period(budget.period, now)
        key = f"{quote(tenant, safe='')}:{budget.name}:{period_id}"
        if budget.per_key:
            key += f":key:{quote(key_id, safe='')}"
        line = BudgetLine(
            key=key,
            limit_nanos=round(budget.limit_usd * 1_000_000_000),
            ttl_s=left_s + KEEP_AFTER_PERIOD_S,
        )
        out.append(Bound(budget, line, started_at, left_s))
    return out


class Budgets:
    """Reservations against the configured budgets. Store errors pass through."""

    def __init__(
        self,
        store: BudgetStore,
        *,
        hold_s: float,
        ledger: UsageLedger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``ledger``: where a line's spend is read from the first time this process uses
        it, so a restart (of the process or of the store) forgets no spend."""
        self._store = store
        self._hold_s = hold_s
        self._ledger = ledger
        self._clock = clock
        self._seeded: set[str] = set()

    async def reserve(
        self, budgets: Sequence[BudgetConfig], tenant: str, key_id: str, amount: int
    ) -> Reservation | None:
        """Hold ``amount`` nano-dollars on every budget binding the caller; None when none does.

        Raises:
            ResourceExhausted: a budget has no room; QuotaFailure names it, RetryInfo says
                when its period ends.
        """
        now = self._clock()
        bound = applicable(budgets, tenant, key_id, now)
        if not bound:
            return None
        for b in bound:
            if b.line.key not in self._seeded:
                await self._seed(b, tenant, key_id, now)
        lines = tuple(b.line for b in bound)
        reservation = uuid.uuid4().hex
        full = await self._store.reserve(lines, reservation, amount, self._hold_s)
        if full < 0:
            return Reservation(reservation, lines, amount)
        budget, line, left_s = bound[full].budget, bound[full].line, bound[full].left_s
        subject = f"key:{key_id}" if budget.per_key else f"tenant:{tenant}"
        limit = f"{usd(line.limit_nanos):.2f} USD per {budget.period}"
        raise ResourceExhausted(
            f"budget {budget.name!r} ({limit}) has no room for this call "
            f"(estimated {usd(amount):.6f} USD); it resets at the end of the UTC {budget.period}",
            retry_after_s=left_s,
            violations=[QuotaViolation(subject, f"budget {budget.name}: {limit}")],
            reason=Reason.BUDGET_EXHAUSTED,
        )

    async def _seed(self, bound: Bound, tenant: str, key_id: str, now: float) -> None:
        if self._ledger is not None:
            group = ("key_id",) if bound.budget.per_key else ()
            totals = await self._ledger.totals(tenant, bound.started_at, now + 1, group)
            spent = sum(
                t.cost_nanos for t in totals if not bound.budget.per_key or t.key_id == key_id
            )
            await self._store.seed(bound.line, spent)
        if len(self._seeded) >= MAX_SEEDED:
            self._seeded.clear()  # at worst a few lines are read back again (a no-op seed)
        self._seeded.add(bound.line.key)

    async def settle(self, reservation: Reservation, amount: int) -> None:
        await self._store.settle(reservation.lines, reservation.id, amount)

    async def release(self, reservation: Reservation) -> None:
        await self._store.release(reservation.lines, reservation.id)
