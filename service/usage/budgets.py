"""Budgets: reserve a call's estimated cost before it runs, settle to the real cost after.

A budget limits a tenant (or each API key of a tenant) per UTC day or month. The reservation
is checked and held atomically on every applicable budget at once (across replicas when the
store is Redis), so a burst cannot overspend: each call's estimate is held until it settles,
and the estimate is an upper bound of its cost. Reservations that are never settled (the
replica crashed) expire after ``hold_s``. The counters are a cache of the usage ledger, which
is the truth: lost counters are rebuilt from it before anything more is admitted.
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
from service.errors import (
    QuotaViolation,
    Reason,
    ResourceExhausted,
    SwitchboardError,
    Unavailable,
)
from service.state.records import NEEDS_SEED, BudgetLine
from service.state.stores import BudgetStore, UsageLedger
from service.usage.pricing import usd

# Counters are kept a day past their period, so late settlements still land.
KEEP_AFTER_PERIOD_S = 86400.0
MAX_UNSETTLED = 100_000  # settlements kept for a retry while the store is down
REBUILD_ATTEMPTS = 3  # reserve, rebuild the lost counters, reserve again (and once more)


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
    bound: tuple[Bound, ...] = ()
    tenant: str = ""
    key_id: str = ""
    until: float = 0.0  # monotonic: when the store drops it on its own


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
    """Reservations against the configured budgets. Store errors pass through.

    The store's counters are a cache of the ledger: when the store says they were lost (a
    new epoch, or a line without a counter), this rebuilds them from the ledger, holds again
    the reservations of this process's calls still in flight, and only then admits.
    """

    def __init__(
        self,
        store: BudgetStore,
        *,
        hold_s: float,
        ledger: UsageLedger | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ledger``: where a line's spend is read back from when its counter is missing."""
        self._store = store
        self._hold_s = hold_s
        self._ledger = ledger
        self._clock = clock
        self._monotonic = monotonic
        self._epoch = ""  # the store's epoch as this process last saw it
        self._live: dict[str, Reservation] = {}
        # Settlements the store did not take (it was down): (reservation, amount), retried
        # before the next reservation while the epoch holds (after a loss, the ledger's
        # re-seed counts them).
        self._unsettled: list[tuple[Reservation, int]] = []

    async def reserve(
        self, budgets: Sequence[BudgetConfig], tenant: str, key_id: str, amount: int
    ) -> Reservation | None:
        """Hold ``amount`` nano-dollars on every budget binding the caller; None when none does.

        Raises:
            ResourceExhausted: a budget has no room; QuotaFailure names it, RetryInfo says
                when its period ends.
            Unavailable: a store does not answer, or the counters could not be rebuilt.
        """
        now = self._clock()
        bound = applicable(budgets, tenant, key_id, now)
        if not bound:
            return None
        lines = tuple(b.line for b in bound)
        reservation = uuid.uuid4().hex
        if self._unsettled:
            await self._settle_late()
        for _ in range(REBUILD_ATTEMPTS):
            full = await self._store.reserve(lines, reservation, amount, self._hold_s, self._epoch)
            if full != NEEDS_SEED:
                break
            await self._rebuild(bound, tenant, key_id, now)
        else:
            raise Unavailable(
                "budget counters were lost and could not be rebuilt from the ledger",
                retry_after_s=1.0,
            )
        if full < 0:
            held = Reservation(
                reservation, lines, amount, tuple(bound), tenant, key_id,
                self._monotonic() + self._hold_s,
            )  # fmt: skip
            self._live[reservation] = held
            return held
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

    async def _rebuild(self, bound: Sequence[Bound], tenant: str, key_id: str, now: float) -> None:
        """After a loss: hold this process's live reservations again (a new epoch), then
        seed the call's lines from the ledger."""
        epoch = await self._store.epoch()
        if epoch != self._epoch:
            self._epoch = epoch
            self._unsettled.clear()  # in the ledger the lines are re-seeded from
            at = self._monotonic()
            for held in list(self._live.values()):
                if held.until > at:
                    await self._store.hold(held.lines, held.id, held.amount, held.until - at)
        for b in bound:
            await self._seed(b, tenant, key_id, now)

    async def _seed(self, bound: Bound, tenant: str, key_id: str, now: float) -> None:
        spent = 0
        if self._ledger is not None:
            group = ("key_id",) if bound.budget.per_key else ()
            totals = await self._ledger.totals(tenant, bound.started_at, now + 1, group)
            spent = sum(
                t.cost_nanos for t in totals if not bound.budget.per_key or t.key_id == key_id
            )
        await self._store.seed(bound.line, spent)

    async def settle(self, reservation: Reservation, amount: int) -> None:
        """Spend ``amount`` (the real cost) in place of the reservation. Call it after the
        call's ledger line is written: a counter lost meanwhile is re-seeded from the
        ledger, which then holds this call."""
        self._live.pop(reservation.id, None)
        try:
            missing = await self._store.settle(reservation.lines, reservation.id, amount)
        except SwitchboardError:
            if len(self._unsettled) < MAX_UNSETTLED:
                self._unsettled.append((reservation, amount))
            raise
        if missing:
            now = self._clock()
            for b in reservation.bound:
                await self._seed(b, reservation.tenant, reservation.key_id, now)

    async def _settle_late(self) -> None:
        """Retry the settlements the store did not take; those it still refuses stay."""
        pending, self._unsettled = self._unsettled, []
        for i, (reservation, amount) in enumerate(pending):
            try:
                await self.settle(reservation, amount)
            except SwitchboardError:
                self._unsettled[:0] = pending[i + 1 :]
                return

    async def release(self, reservation: Reservation) -> None:
        self._live.pop(reservation.id, None)
        await self._store.release(reservation.lines, reservation.id)
