"""The approval store's interface (SQLite and PostgreSQL, beside the runs: a run's
checkpoint and the approvals it waits for are written in one transaction by
:meth:`service.runs.store.RunStore.save_run`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from service.approvals.records import ApprovalRecord, ApprovalState


class ApprovalStore(Protocol):
    async def insert_approvals(self, approvals: Sequence[ApprovalRecord]) -> None:
        """Store new approvals (their ids are new), in one transaction."""
        ...

    async def expire_approvals(self, tenant: str, approval_ids: Sequence[str], now: float) -> None:
        """Expire those of ``approval_ids`` still pending (whatever their expiry), atomically
        against ``decide_approval``: after it, each is decided or expired for good."""
        ...

    async def get_approval(self, tenant: str, approval_id: str) -> ApprovalRecord | None: ...

    async def get_approvals(self, tenant: str, approval_ids: Sequence[str]) -> list[ApprovalRecord]:
        """The approvals with these ids (those that exist), in no particular order."""
        ...

    async def list_approvals(
        self,
        tenant: str,
        *,
        before: str = "",
        limit: int = 100,
        state: ApprovalState | None = None,
        run_id: str = "",
        now: float,
    ) -> list[ApprovalRecord]:
        """The tenant's approvals, newest first (``before``: the last id of the previous
        page). ``state`` PENDING lists only those not yet expired; EXPIRED includes pending
        ones past their expiry."""
        ...

    async def decide_approval(
        self,
        tenant: str,
        approval_id: str,
        state: ApprovalState,
        *,
        approver: str,
        comment: str,
        edited_arguments_json: str,
        now: float,
    ) -> ApprovalRecord | None:
        """Atomically decide a pending, unexpired approval; the decided record, or None when
        it was already decided, expired, or does not exist (read it to tell which)."""
        ...
