"""The run store's interface: SQLite (embedded) and PostgreSQL (shared) implement it, and
pass the same tests (tests/state/). Every method is tenant-scoped and bounded by the store's
timeout (``Unavailable`` when the store is down)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.approvals.records import ApprovalRecord
from service.runs.records import RunRecord, RunState


class RunStore(Protocol):
    async def create_run(self, run: RunRecord) -> None:
        """Store a new run (its id is new)."""
        ...

    async def get_run(self, tenant: str, run_id: str) -> RunRecord | None: ...

    async def list_runs(
        self,
        tenant: str,
        *,
        before: str = "",
        limit: int = 100,
        kind: str = "",
        state: RunState | None = None,
    ) -> list[RunRecord]:
        """The tenant's runs, newest first (``before``: a page token, the last run id seen
        of the previous page; runs are ordered by (created_at, run_id) descending)."""
        ...

    async def claim_run(
        self, tenant: str, run_id: str, owner: str, lease_until: float, now: float
    ) -> RunRecord | None:
        """Atomically take the run for ``owner`` until ``lease_until``: it must be WAITING or
        RUNNING, and unheld (no owner, ``owner`` itself, or a lease before ``now``). It
        becomes RUNNING. None when another holds it, it ended, or there is none."""
        ...

    async def save_run(
        self, run: RunRecord, *, owner: str, approvals: Sequence[ApprovalRecord] = ()
    ) -> bool:
        """Write the run's state, checkpoint, result, error, steps, pending, owner and lease,
        if ``owner`` still holds it (its stored owner is ``owner``), and insert the new
        ``approvals`` in the same transaction. False (nothing written) when not."""
        ...

    async def cancel_run(self, tenant: str, run_id: str, now: float) -> RunRecord | None:
        """Cancel a run that has not ended (whoever holds it: a holder's next save fails),
        and expire its pending approvals. The cancelled record, or None."""
        ...
