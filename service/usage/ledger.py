"""The one writer of ledger lines and audit entries: the durable store, or the local outbox.

A line goes to the durable store (PostgreSQL or SQLite). When that store fails
(``Unavailable``: down, refusing connections, slow past ``timeout_s``), the line goes to the
local outbox (:mod:`service.state.outbox`) instead, and a replay task owned by this object
writes the outbox back to the store, oldest first, once it answers again (and at start, for
lines a previous run left). The store ignores a line whose id it has, so each line lands
exactly once. Only when the outbox cannot be written either does a write raise.

``totals`` (what the usage API reports) adds the lines still waiting in this process's outbox
to the store's. Budgets count those lines as holds instead (:mod:`service.usage.budgets`),
held until the replay lands them: ``on_landed`` is told of each batch landed, before it
leaves the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from service.errors import SwitchboardError
from service.state.outbox import Outbox
from service.state.records import GROUP_DIMENSIONS, AuditEntry, UsageRecord, UsageTotal
from service.state.stores import AuditLog, UsageLedger
from service.tasks import stop

log = logging.getLogger(__name__)

REPLAY_BATCH = 200
REPLAY_WAIT_S = (0.2, 5.0)  # first and longest wait between replay attempts


class Ledger:
    """See the module docstring. ``start()`` begins replaying what an earlier run left."""

    def __init__(self, store: DurableRecords, outbox: Outbox) -> None:
        self._store = store
        self._outbox = outbox
        self._replay: asyncio.Task[None] | None = None
        self._closed = False
        # Told of every batch of outbox lines the store took (the budgets' holds of them
        # become spend); a failure leaves the batch in the outbox, replayed again.
        self.on_landed: Callable[[Sequence[UsageRecord]], Awaitable[None]] | None = None
        # Told of every line once it is written (store or outbox): the cost metric.
        self.on_recorded: Callable[[UsageRecord], None] | None = None

    @property
    def outbox(self) -> Outbox:
        return self._outbox

    def start(self) -> None:
        """Replay the outbox in the background if an earlier run left lines in it."""
        if self._outbox.exists():
            self._kick()

    async def record_usage(self, record: UsageRecord, audit: AuditEntry | None = None) -> bool:
        """Write the line (and ``audit``, in the same transaction) durably; True when it
        went to the outbox (it waits there until the store takes it).

        Raises:
            Unavailable: neither the store nor the outbox took it.
        """
        try:
            await self._store.record_usage(record, audit)
        except SwitchboardError as exc:
            await self._to_outbox(record, audit, exc)
            outboxed = True
        else:
            outboxed = False
        if self.on_recorded is not None:
            self.on_recorded(record)
        return outboxed

    async def audit(self, entry: AuditEntry) -> None:
        """Write the entry durably. Raises Unavailable as ``record_usage`` does."""
        try:
            await self._store.audit(entry)
        except SwitchboardError as exc:
            await self._to_outbox(None, entry, exc)

    async def recent_audit(self, tenant: str, limit: int) -> list[AuditEntry]:
        return await self._store.recent_audit(tenant, limit)

    async def stored_totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        """The store's totals alone."""
        return await self._store.totals(tenant, start, end, group_by)

    async def waiting(self) -> list[UsageRecord]:
        """The ledger lines waiting in this process's outbox, oldest first."""
        if not self._outbox.exists():
            return []
        return await self._outbox.usage()

    async def totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        """The store's totals plus the lines waiting in this process's outbox."""
        stored = await self._store.totals(tenant, start, end, group_by)
        if not self._outbox.exists():
            return stored
        waiting = await self._outbox.usage(tenant, start, end)
        return _merged(stored, waiting, group_by) if waiting else stored

    async def replay(self) -> int:
        """Write one batch of the outbox to the store, oldest first; the number written.
        ``on_landed`` hears of the lines written before they leave the outbox.

        Raises:
            Unavailable: the store (or the outbox, or ``on_landed``) does not answer.
        """
        batch = await self._outbox.oldest(REPLAY_BATCH)
        done: list[int] = []
        landed: list[UsageRecord] = []
        try:
            for item_id, usage, audit in batch:
                if usage is not None:
                    await self._store.record_usage(usage, audit)
                    landed.append(usage)
                elif audit is not None:
                    await self._store.audit(audit)
                done.append(item_id)
        finally:
            if done:
                # Told first: a crash or failure in between replays the lines again (the
                # store ignores them), never leaves their holds counting nothing.
                if landed and self.on_landed is not None:
                    await self.on_landed(landed)
                await self._outbox.remove(done)
        return len(done)

    async def aclose(self) -> None:
        """Stop replaying (what is left stays in the outbox for the next run)."""
        self._closed = True
        await stop(self._replay)
        await self._outbox.aclose()

    async def _to_outbox(
        self, usage: UsageRecord | None, audit: AuditEntry | None, cause: SwitchboardError
    ) -> None:
        await self._outbox.put(usage, audit)
        log.warning(
            "durable store unavailable: ledger/audit line kept in the local outbox "
            "until it answers (%s)",
            cause.message,
        )
        self._kick()

    def _kick(self) -> None:
        if self._closed or (self._replay is not None and not self._replay.done()):
            return
        self._replay = asyncio.get_running_loop().create_task(
            self._replay_all(), name="outbox-replay"
        )

    async def _replay_all(self) -> None:
        wait_s = REPLAY_WAIT_S[0]
        while True:
            try:
                if await self.replay() < REPLAY_BATCH and not await self._outbox.count():
                    log.info("local outbox replayed to the durable store")
                    return
                wait_s = REPLAY_WAIT_S[0]
            except SwitchboardError as exc:
                log.info("outbox replay waits for the durable store: %s", exc.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, REPLAY_WAIT_S[1])


class DurableRecords(UsageLedger, AuditLog, Protocol):
    """What :class:`Ledger` writes to (a ``Durable`` store)."""


def _merged(
    stored: list[UsageTotal], waiting: list[UsageRecord], group_by: Sequence[str]
) -> list[UsageTotal]:
    """``stored`` with the ``waiting`` lines added to their groups, ordered by group."""
    dims = [d for d in GROUP_DIMENSIONS if d in group_by]
    groups = {tuple(getattr(t, d) for d in dims): t for t in stored}
    for r in waiting:
        key = tuple(getattr(r, d) for d in dims)
        labels = dict(zip(dims, key, strict=True))
        t = groups.get(key) or UsageTotal(
            agent=labels.get("agent", ""),
            model=labels.get("model", ""),
            key_id=labels.get("key_id", ""),
            calls=0, failed_calls=0, cache_hits=0, input_tokens=0, output_tokens=0,
            cost_nanos=0,
        )  # fmt: skip
        groups[key] = dataclasses.replace(
            t,
            calls=t.calls + 1,
            failed_calls=t.failed_calls + (r.status != "ok"),
            cache_hits=t.cache_hits + r.cache_hit,
            input_tokens=t.input_tokens + r.input_tokens,
            output_tokens=t.output_tokens + r.output_tokens,
            cost_nanos=t.cost_nanos + r.cost_nanos,
            cached_input_tokens=t.cached_input_tokens + r.cached_input_tokens,
            cache_creation_5m_input_tokens=(
                t.cache_creation_5m_input_tokens + r.cache_creation_5m_input_tokens
            ),
            cache_creation_1h_input_tokens=(
                t.cache_creation_1h_input_tokens + r.cache_creation_1h_input_tokens
            ),
            reasoning_tokens=t.reasoning_tokens + r.reasoning_tokens,
            estimated_calls=t.estimated_calls + r.estimated,
        )
    return [groups[key] for key in sorted(groups)]
