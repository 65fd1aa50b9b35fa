"""Store interfaces. Each has an embedded and a shared implementation that run the same
behavioural tests (tests/state/).

Every method is bounded by the store's ``timeout_s`` and raises ``Unavailable`` with a clear
message when the store is down or slow; none hangs. Keys and rows are always scoped by tenant.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.approvals.store import ApprovalStore
from service.errors import FailedPrecondition
from service.runs.store import RunStore
from service.state.admin_store import AdminStore
from service.state.records import (
    AuditEntry,
    BudgetLine,
    Claim,
    SessionInfo,
    Turn,
    UsageRecord,
    UsageTotal,
)


def session_of_another_agent(session_id: str) -> FailedPrecondition:
    """What ``SessionStore.append`` raises for a turn of an agent the session is not of."""
    return FailedPrecondition(
        f"session {session_id!r} belongs to another agent; use a new session_id"
    )


class SessionStore(Protocol):
    async def turns(self, tenant: str, session_id: str, limit: int) -> list[Turn]:
        """The newest ``limit`` turns of the session, oldest first ([] if none)."""
        ...

    async def append(
        self,
        tenant: str,
        session_id: str,
        agent: str,
        messages_json: str,
        at: float,
        *,
        usage: UsageRecord | None = None,
        audit: AuditEntry | None = None,
    ) -> None:
        """Append one turn atomically, creating the session if needed; with ``usage`` and
        ``audit``, write them in the same transaction. A session keeps the agent that
        created it: a turn of another agent raises :func:`session_of_another_agent`'s error
        and writes nothing. Concurrent appends to one session all
        land, each whole."""
        ...

    async def get(self, tenant: str, session_id: str) -> SessionInfo | None: ...

    async def list_sessions(
        self, tenant: str, after: str, limit: int, agents: Collection[str] | None = None
    ) -> list[SessionInfo]:
        """Sessions with ids greater than ``after``, ordered by id; with ``agents``, only
        the sessions of those agents."""
        ...

    async def delete(self, tenant: str, session_id: str) -> bool:
        """Delete the session and its turns; False when there was none."""
        ...


class UsageLedger(Protocol):
    async def record_usage(self, record: UsageRecord, audit: AuditEntry | None = None) -> None:
        """Add the ledger line, and ``audit`` to the audit log in the same transaction."""
        ...

    async def totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        """Totals of the tenant's lines with ``start <= at < end``, grouped by the named
        dimensions (of GROUP_DIMENSIONS), ordered by them."""
        ...


class AuditLog(Protocol):
    async def audit(self, entry: AuditEntry) -> None: ...

    async def recent_audit(self, tenant: str, limit: int) -> list[AuditEntry]:
        """The tenant's newest entries, newest first."""
        ...


class BudgetStore(Protocol):
    """Budget counters: a cache of the usage ledger's sums, rebuilt when lost.

    A line's counter holds its spend (what the ledger holds); holds are kept beside it, each
    with an expiry: reservations of calls in flight, and ledger lines waiting in a local
    outbox (``ob:<line id>``). The store has an ``epoch`` that changes when its counters are
    lost (a restart, flush or failover of Redis; a new process for the memory store), and a
    line without a counter is lost too (never seeded, evicted). Nothing is admitted on a
    lost counter: ``reserve`` says ``NEEDS_SEED``; nor in a new epoch's rebuild time, while
    every process holds again what it knows that the ledger does not (``reserve`` says how
    long to wait). A counter is rebuilt under a fence (``begin_seed``, read the ledger,
    ``end_seed``): spend that lands while the ledger is read is added, never lost.
    """

    async def epoch(self, rebuild_s: float = 0.0) -> str:
        """The counters' current generation. If there is none, one is started now, that
        admits nothing for ``rebuild_s``."""
        ...

    async def reserve(
        self, lines: Sequence[BudgetLine], reservation: str, amount: int, hold_s: float, epoch: str
    ) -> int:
        """Atomically: ``NEEDS_SEED`` (-2) when ``epoch`` is not the store's or a line has no
        counter; ``WAIT - n`` (at most -3) while the epoch is in its rebuild time: ask again
        in ``n`` ms; else if every line has room for ``amount`` (spent + holds + amount <=
        limit), hold ``amount`` on each under ``reservation`` for ``hold_s`` and return -1;
        else hold nothing and return the index of the first line without room."""
        ...

    async def hold(
        self, lines: Sequence[BudgetLine], hold_id: str, amount: int, hold_s: float
    ) -> None:
        """Hold ``amount`` under ``hold_id`` for ``hold_s`` without checking the limits (held
        again after a loss: a call still in flight, a line waiting in an outbox); replaces a
        hold of the same id."""
        ...

    async def settle(self, lines: Sequence[BudgetLine], reservation: str, amount: int) -> bool:
        """Drop the reservation and add ``amount`` (the real cost, whose ledger line is
        written) to each line's spend. True when a line had no counter (it is not created
        from ``amount`` alone: the caller seeds it from the ledger, which holds this call)."""
        ...

    async def settle_pending(
        self, lines: Sequence[BudgetLine], reservation: str, line_id: str, amount: int
    ) -> None:
        """Drop the reservation and hold ``amount`` under ``ob:<line_id>``, a ledger line that
        waits in an outbox, for as long as the line's period is kept (``landed`` ends it)."""
        ...

    async def landed(
        self, lines: Sequence[BudgetLine], line_id: str, amount: int, epoch: str
    ) -> None:
        """The outbox line ``line_id`` reached the ledger: its hold becomes spend. When it
        has no hold and ``epoch`` (the caller's) is not the store's, the line may be counted
        nowhere: it is spent anyway (at worst counted twice, never not at all)."""
        ...

    async def release(self, lines: Sequence[BudgetLine], reservation: str) -> None:
        """Drop the reservation without spending."""
        ...

    async def spent(self, line: BudgetLine) -> tuple[int, int]:
        """(spent, held) of one line."""
        ...

    async def begin_seed(self, line: BudgetLine, token: str, lease_s: float) -> int:
        """Take the line's seeding lease for ``lease_s`` under ``token``: 1, the caller now
        reads the ledger and calls ``end_seed``; 0, the line has a counter; -1, another seed
        is under way (ask again)."""
        ...

    async def end_seed(self, line: BudgetLine, token: str, spent: int) -> bool:
        """Set the counter to ``spent`` (the ledger's sum, read after ``begin_seed``) plus
        what was spent on the line since. False: the lease was lost; nothing was set."""
        ...


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def lead(self, key: str, token: str, lease_s: float) -> bool:
        """Take the fill lease of ``key`` for ``lease_s`` under ``token``, if nobody holds it
        (single-flight across processes). Always true for a single-process store."""
        ...

    async def unlead(self, key: str, token: str) -> None:
        """Free the lease if ``token`` still holds it."""
        ...


class IdempotencyStore(Protocol):
    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        """Take ``key`` for ``lease_s`` if nobody holds it; else say who does."""
        ...

    async def complete(self, key: str, fingerprint: str, result: bytes, ttl_s: float) -> None:
        """Record the answer under ``key`` for ``ttl_s``."""
        ...

    async def abandon(self, key: str) -> None:
        """Free ``key`` (the call failed): a retry runs again."""
        ...


class Durable(SessionStore, UsageLedger, AuditLog, IdempotencyStore, Protocol):
    """The durable records: sessions, usage ledger, audit, idempotency records (SQLite or
    PostgreSQL)."""

    async def migrate(self) -> None: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


class Fast(BudgetStore, CacheStore, IdempotencyStore, Protocol):
    """Fast shared state: budget counters, cache, idempotency (memory or Redis)."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """Every store of one process, built once by the composition root."""

    backend: str
    durable: Durable
    fast: Fast
    idempotency: IdempotencyStore  # durable (embedded), or durable behind a cache (shared)
    admin: AdminStore  # API keys and cross-tenant reports, in the durable store
    approvals: ApprovalStore  # tool-call approvals, in the durable store
    runs: RunStore  # runs that can wait (parked tool loops), beside the approvals

    async def ping(self) -> None:
        """Raises Unavailable when a store does not answer."""
        await self.durable.ping()
        await self.fast.ping()

    async def aclose(self) -> None:
        try:
            await self.fast.aclose()
        finally:
            await self.durable.aclose()
