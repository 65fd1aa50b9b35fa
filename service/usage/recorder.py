"""Records what a call cost and settles its budget reservation, whatever ends the call.

Each call's closing work (the ledger line and audit entry, or the session turn with them;
then the budget settlement) runs in a task this object owns and the call awaits shielded:
a caller that goes away, a deadline, or a drain that cancels the call does not cut the write
short. The composition root waits for these tasks (``drain``) before it closes the stores.

Order: the line is written first, then the budget settled. A budget counter lost in between
is re-seeded from the ledger, which then already holds the line (a re-seed racing a settle
can count one call twice, never zero times).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine

from service.errors import SwitchboardError
from service.state.records import AuditEntry, UsageRecord
from service.usage.budgets import Budgets, Reservation
from service.usage.ledger import Ledger

log = logging.getLogger(__name__)


class Recorder:
    """See the module docstring."""

    def __init__(self, ledger: Ledger, budgets: Budgets) -> None:
        self._ledger = ledger
        self._budgets = budgets
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def record(
        self,
        usage: UsageRecord,
        audit: AuditEntry,
        reservation: Reservation | None,
        *,
        write: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Write the call's line (by ``write()`` when given, e.g. with a session's turn; else
        to the ledger), then settle ``reservation`` to ``usage.cost_nanos`` (released when
        zero). The write and settlement run to the end even if the caller is cancelled.

        Raises:
            Whatever ``write()`` raises (nothing is settled: the caller records the call
            again, with its error). A ledger line neither the store nor the outbox took is
            logged, and the reservation still settled.
        """
        await self._owned(self._record(usage, audit, reservation, write))

    async def release(self, reservation: Reservation) -> None:
        """Release ``reservation`` (nothing was charged); shielded like ``record``."""
        await self._owned(self._settle(reservation, 0))

    async def audit(self, entry: AuditEntry) -> None:
        """Write an audit entry alone (a call refused before it began); shielded like
        ``record``. An entry neither the store nor the outbox took is logged."""
        await self._owned(self._audit(entry))

    async def _owned(self, work: Coroutine[None, None, None]) -> None:
        """Run ``work`` in a task this object owns (``drain`` waits for it), shielded."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        await asyncio.shield(task)

    async def _audit(self, entry: AuditEntry) -> None:
        try:
            await self._ledger.audit(entry)
        except SwitchboardError as exc:
            log.exception("audit write failed (store and outbox): %s", exc.message)

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every write under way; whether they all ended."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that left no longer awaits it
        if not self._tasks:
            self._idle.set()

    async def _record(
        self,
        usage: UsageRecord,
        audit: AuditEntry,
        reservation: Reservation | None,
        write: Callable[[], Awaitable[None]] | None,
    ) -> None:
        pending = ""  # the line's id while it waits in the outbox
        if write is not None:
            await write()  # a failed append raises before settling: the caller records it
        else:
            try:
                if await self._ledger.record_usage(usage, audit):
                    pending = usage.line_id
            except SwitchboardError as exc:
                log.exception("usage ledger write failed (store and outbox): %s", exc.message)
        if reservation is not None:
            await self._settle(reservation, usage.cost_nanos, pending)

    async def _settle(self, reservation: Reservation, amount: int, pending: str = "") -> None:
        try:
            if amount > 0:
                await self._budgets.settle(reservation, amount, pending)
            else:
                await self._budgets.release(reservation)
        except SwitchboardError as exc:
            log.warning(
                "budget settlement failed (retried before the next reservation): %s", exc.message
            )
