"""Budgets: reserve a call's estimated cost before it runs, settle to the real cost after.

A budget limits a tenant (or each API key of a tenant) per UTC day or month. The reservation
is checked and held atomically on every applicable budget at once (across replicas when the
store is Redis), so a burst cannot overspend: each call's estimate is held until it settles,
and the estimate is an upper bound of its cost. Reservations that are never settled (the
replica crashed) expire after ``hold_s``.

The counters are a cache of the usage ledger, which is the truth. What the ledger does not
hold yet is held beside the counters: the reservations of calls in flight, and the lines
waiting in a local outbox (the durable store was down when they were written; each is held
until its replay lands it in the ledger). When the store loses the counters (a new epoch),
every process holds all of that again within the epoch's rebuild time (``rebuild_s``),
during which nothing is admitted: each process watches the epoch (:meth:`Budgets.watch`, every
quarter of ``rebuild_s``) and the first call that finds it changed does the same. Lost
counters are then rebuilt from the ledger (under the store's seeding fence) before anything
more is admitted.

Which lines a call is charged on: those its reservation bound, the budgets configured and
their UTC periods at the moment it was admitted (``Reservation.at``). That is where its upper
bound was checked against the limit, so charging it there keeps every budget within its limit;
a call reserved at 23:59:59 and ending after midnight belongs to the day it was admitted in.
Its ledger line says the same (:func:`binding`): dated at that moment, so a counter rebuilt
from the ledger (the sum of its lines dated in the period) counts the call in that period
too, and naming the lines, so a line that waits in the outbox is held and landed on them
(:meth:`Budgets.landed`, :meth:`Budgets.check_epoch`), whatever the budgets are, or whatever
day it is, when it lands.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote

from service.config.state_model import BudgetConfig
from service.errors import (
    QuotaViolation,
    Reason,
    ResourceExhausted,
    SwitchboardError,
    Unavailable,
)
from service.state.records import NEEDS_SEED, WAIT, BudgetLine, UsageRecord, UsageTotal
from service.state.stores import BudgetStore
from service.tasks import stop
from service.usage.pricing import usd

log = logging.getLogger(__name__)

# Counters are kept a day past their period, so late settlements still land.
KEEP_AFTER_PERIOD_S = 86400.0
MAX_UNSETTLED = 100_000  # settlements kept for a retry while the store is down
REBUILD_WAIT_S = 10.0  # the longest a reservation waits for lost counters, past rebuild_s
SEED_LEASE_S = 5.0  # a seeder that dies (or cannot read the ledger) frees its line after this
BUSY_WAIT_S = 0.05  # between looks at a line another process is seeding


@dataclass(frozen=True, slots=True)
class Bound:
    """A budget that binds a caller now: its config, store line and period."""

    budget: BudgetConfig
    line: BudgetLine
    started_at: float  # unix seconds: the period's start
    left_s: float  # of the period, at the moment the budget was bound
    ends_at: float  # the period's end


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    lines: tuple[BudgetLine, ...]
    amount: int
    bound: tuple[Bound, ...] = ()
    tenant: str = ""
    key_id: str = ""
    until: float = 0.0  # monotonic: when the store drops it on its own
    at: float = 0.0  # unix seconds: when its lines were bound (the call's period)

    def charged(self) -> tuple[tuple[str, float], ...]:
        """Its lines, for the call's ledger line: (key, when the counters go, unix)."""
        return tuple((line.key, self.at + line.ttl_s) for line in self.lines)


def binding(
    reservation: Reservation | None, now: float
) -> tuple[float, tuple[tuple[str, float], ...]]:
    """A ledger line's ``at`` and ``budget_lines``, for a call ending at ``now``: where and
    when ``reservation`` was made (see the module docstring); a call no budget bound keeps
    ``now`` and names no lines."""
    if reservation is None:
        return now, ()
    return reservation.at, reservation.charged()


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
        out.append(Bound(budget, line, started_at, left_s, now + left_s))
    return out


class Books(Protocol):
    """Where the counters are rebuilt from (:class:`service.usage.ledger.Ledger`)."""

    async def stored_totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        """The durable store's totals (what its outbox holds is not among them)."""
        ...

    async def waiting(self) -> list[UsageRecord]:
        """The ledger lines waiting in this process's outbox."""
        ...


class Budgets:
    """Reservations against the configured budgets. Store errors pass through.

    See the module docstring for how lost counters are rebuilt.
    """

    def __init__(
        self,
        store: BudgetStore,
        *,
        hold_s: float,
        books: Books | None = None,
        configs: Callable[[], Sequence[BudgetConfig]] = tuple,
        rebuild_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``books``: where spend is read back from when a counter is lost, and the lines
        waiting in the outbox. ``configs()``: the budgets now (for outbox lines written
        before ledger lines named their budget lines). ``rebuild_s``: how long a new epoch
        admits nothing, while every process holds again what it knows that the ledger does
        not."""
        self._store = store
        self._hold_s = hold_s
        self._books = books
        self._configs = configs
        self._rebuild_s = rebuild_s
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._epoch = ""  # the store's epoch as this process last held everything in
        self._epoch_lock = asyncio.Lock()
        self._live: dict[str, Reservation] = {}
        # Settlements the store did not take (it was down): (reservation, amount, the
        # outbox line or ""), retried before the next reservation while the epoch holds.
        # After a loss the ledger's re-seed counts the written ones, and the outbox's holds
        # the waiting ones.
        self._unsettled: list[tuple[Reservation, int, str]] = []
        self._watch: asyncio.Task[None] | None = None
        # This process's seeding lease token (a failed seed is resumed, not waited out) and
        # the seeds under way, by line.
        self._token = uuid.uuid4().hex
        self._seeding: dict[str, asyncio.Future[None]] = {}

    async def reserve(
        self,
        budgets: Sequence[BudgetConfig],
        tenant: str,
        key_id: str,
        amount: int,
        *,
        wait_s: float | None = None,
    ) -> Reservation | None:
        """Hold ``amount`` nano-dollars on every budget binding the caller; None when none does.
        Waits, at most ``wait_s`` (default: the rebuild time and ``REBUILD_WAIT_S``), while
        lost counters are rebuilt.

        Raises:
            ResourceExhausted: a budget has no room; QuotaFailure names it, RetryInfo says
                when its period ends.
            Unavailable: a store does not answer, or the counters could not be rebuilt in
                time.
        """
        now = self._clock()
        bound = applicable(budgets, tenant, key_id, now)
        if not bound:
            return None
        lines = tuple(b.line for b in bound)
        reservation = uuid.uuid4().hex
        if self._unsettled:
            await self._settle_late()
        wait_s = self._rebuild_s + REBUILD_WAIT_S if wait_s is None else wait_s
        give_up = self._monotonic() + wait_s
        while True:
            full = await self._store.reserve(lines, reservation, amount, self._hold_s, self._epoch)
            if full > NEEDS_SEED:
                break
            if self._monotonic() >= give_up:
                raise Unavailable(
                    "budget counters were lost and are being rebuilt from the ledger",
                    retry_after_s=1.0,
                )
            if full == NEEDS_SEED:
                await self._rebuild(bound, tenant, key_id)
            else:  # a new epoch's rebuild time: every process holds its part again
                await self._sleep(min((WAIT - full) / 1000, give_up - self._monotonic()))
        if full < 0:
            held = Reservation(
                reservation, lines, amount, tuple(bound), tenant, key_id,
                self._monotonic() + self._hold_s, now,
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

    async def grow(self, reservation: Reservation, amount: int) -> bool:
        """Hold ``amount`` more under ``reservation`` (an extra attempt of its call), if every
        budget it binds has room; False, holding nothing more, when one has not (or the
        store does not answer, or its counters are being rebuilt)."""
        try:
            done = await self._store.grow(
                reservation.lines, reservation.id, amount, self._hold_s, self._epoch
            )
        except SwitchboardError as exc:
            log.warning("budget not grown for another attempt: %s", exc.message)
            return False
        if done != -1:
            return False
        held = self._live.get(reservation.id)
        if held is not None:  # held again at its full amount after a loss
            self._live[reservation.id] = replace(held, amount=held.amount + amount)
        return True

    async def check_epoch(self) -> None:
        """If the store's counters were lost (a new epoch), hold again what this process
        knows that the ledger does not: its reservations in flight and the lines waiting in
        its outbox. Raises Unavailable when the store does not answer (done on the next
        check: every hold is idempotent)."""
        epoch = await self._store.epoch(self._rebuild_s)
        if epoch == self._epoch:
            return
        async with self._epoch_lock:
            if epoch == self._epoch:
                return
            at = self._monotonic()
            for held in list(self._live.values()):
                if held.until > at:
                    await self._store.hold(held.lines, held.id, held.amount, held.until - at)
            for record in await self._books.waiting() if self._books is not None else []:
                for line in self._charged(record):
                    await self._store.hold([line], f"ob:{record.line_id}", record.cost_nanos,
                                           line.ttl_s)  # fmt: skip
            # Settlements the store did not take: the ledger's re-seed counts the written
            # lines, the outbox's holds the waiting ones.
            self._unsettled.clear()
            if self._epoch:
                log.warning("budget counters were lost: held again what is in flight")
            self._epoch = epoch

    async def watch(self) -> None:
        """Check the epoch every quarter of the rebuild time, until cancelled."""
        every = max(self._rebuild_s / 4, 0.05)
        while True:
            await self._sleep(every)
            try:
                await self.check_epoch()
            except SwitchboardError as exc:
                log.debug("budget epoch not checked: %s", exc.message)

    def start(self) -> None:
        """Start :meth:`watch` in a task this object owns (``aclose`` ends it)."""
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self.watch(), name="budgets")

    async def aclose(self) -> None:
        await stop(self._watch)
        self._watch = None

    def _charged(self, record: UsageRecord) -> list[BudgetLine]:
        """The lines a ledger line's call was charged on (its reservation's), those whose
        counters are still kept. Holds and landings check no limit: the limit is 0. A line
        written before lines were named: the budgets configured now, at its date."""
        if record.cost_nanos <= 0:
            return []
        if record.budget_lines is None:
            bound = applicable(self._configs(), record.tenant, record.key_id, record.at)
            return [b.line for b in bound]
        now = self._clock()
        return [BudgetLine(key, 0, until - now) for key, until in record.budget_lines
                if until > now]  # fmt: skip

    async def _rebuild(self, bound: Sequence[Bound], tenant: str, key_id: str) -> None:
        """After a loss: hold again what is in flight (a new epoch), then seed the call's
        lines from the ledger."""
        await self.check_epoch()
        for b in bound:
            await self._seed(b, tenant, key_id)

    async def _seed(self, bound: Bound, tenant: str, key_id: str) -> None:
        """Rebuild one line's counter from the ledger, under the store's fence; once at a
        time in this process (returns soon when another process is seeding it: the caller
        asks again)."""
        seeding = self._seeding.get(bound.line.key)
        if seeding is None:
            seeding = asyncio.ensure_future(self._seed_once(bound, tenant, key_id))
            self._seeding[bound.line.key] = seeding
            seeding.add_done_callback(lambda _: self._seeding.pop(bound.line.key, None))
        await asyncio.shield(seeding)

    async def _seed_once(self, bound: Bound, tenant: str, key_id: str) -> None:
        """The line's counter is the ledger's sum of the lines dated in its period (each
        call's line is dated when its lines were bound: :func:`binding`)."""
        began = await self._store.begin_seed(bound.line, self._token, SEED_LEASE_S)
        if began < 0:
            await self._sleep(BUSY_WAIT_S)
        if began <= 0:
            return
        spent = 0
        if self._books is not None:
            group = ("key_id",) if bound.budget.per_key else ()
            totals = await self._books.stored_totals(tenant, bound.started_at, bound.ends_at, group)
            spent = sum(
                t.cost_nanos for t in totals if not bound.budget.per_key or t.key_id == key_id
            )
        await self._store.end_seed(bound.line, self._token, spent)

    async def settle(self, reservation: Reservation, amount: int, pending: str = "") -> None:
        """Spend ``amount`` (the real cost) in place of the reservation. Call it after the
        call's ledger line is written: a counter lost meanwhile is re-seeded from the
        ledger, which then holds this call. ``pending``: the line's id, when it was written
        to the outbox instead: it is held until :meth:`landed`."""
        self._live.pop(reservation.id, None)
        try:
            if pending:
                await self._store.settle_pending(reservation.lines, reservation.id, pending, amount)
                return
            missing = await self._store.settle(reservation.lines, reservation.id, amount)
        except SwitchboardError:
            if len(self._unsettled) < MAX_UNSETTLED:
                self._unsettled.append((reservation, amount, pending))
            raise
        if missing:
            for b in reservation.bound:
                await self._seed(b, reservation.tenant, reservation.key_id)

    async def landed(self, records: Sequence[UsageRecord]) -> None:
        """Outbox lines reached the ledger: their holds become spend (each at most once).

        Raises:
            Unavailable: the store did not answer (the outbox replays the lines again).
        """
        for record in records:
            lines = self._charged(record)
            if lines:
                await self._store.landed(lines, record.line_id, record.cost_nanos, self._epoch)

    async def _settle_late(self) -> None:
        """Retry the settlements the store did not take; those it still refuses stay."""
        pending, self._unsettled = self._unsettled, []
        for i, (reservation, amount, line_id) in enumerate(pending):
            try:
                await self.settle(reservation, amount, line_id)
            except SwitchboardError:
                self._unsettled[:0] = pending[i + 1 :]
                return

    async def release(self, reservation: Reservation) -> None:
        self._live.pop(reservation.id, None)
        await self._store.release(reservation.lines, reservation.id)
