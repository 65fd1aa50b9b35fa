"""Approvals on PostgreSQL (see :mod:`service.approvals.store`), through the pool of
:class:`~service.state.postgres.PostgresDurable`: every replica sees the same rows, and a
decision is one conditional UPDATE, so two approvers never both win."""

from __future__ import annotations

from collections.abc import Sequence

from service.approvals import rows
from service.approvals.records import ApprovalRecord, ApprovalState
from service.state.postgres import PostgresDurable

_INSERT = (
    f"INSERT INTO approvals ({rows.SELECT}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(rows.COLUMNS) + 1))})"
)


class PostgresApprovals:
    """See the module docstring."""

    def __init__(self, durable: PostgresDurable) -> None:
        self._durable = durable

    async def insert_approvals(self, approvals: Sequence[ApprovalRecord]) -> None:
        async with self._durable.transaction() as conn:
            await conn.executemany(_INSERT, [rows.values(a) for a in approvals])

    async def get_approval(self, tenant: str, approval_id: str) -> ApprovalRecord | None:
        found = await self.get_approvals(tenant, [approval_id])
        return found[0] if found else None

    async def get_approvals(self, tenant: str, approval_ids: Sequence[str]) -> list[ApprovalRecord]:
        if not approval_ids:
            return []
        found = await self._durable.fetch(
            f"SELECT {rows.SELECT} FROM approvals "  # noqa: S608
            "WHERE tenant = $1 AND approval_id = ANY($2::text[])",
            tenant,
            list(approval_ids),
        )
        return [rows.record_of(r) for r in found]

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
        where = rows.state_filter(state).format(now="$2::double precision")
        found = await self._durable.fetch(
            f"SELECT {rows.SELECT} FROM approvals WHERE tenant = $1 AND {where} "  # noqa: S608
            "AND ($3::text = '' OR run_id = $3::text) "
            "AND ($4::text = '' OR (created_at, approval_id) < "
            "(SELECT created_at, approval_id FROM approvals "
            "WHERE tenant = $1 AND approval_id = $4::text)) "
            "ORDER BY created_at DESC, approval_id DESC LIMIT $5",
            tenant,
            now,
            run_id,
            before,
            limit,
        )
        return [rows.record_of(r) for r in found]

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
        found = await self._durable.fetch(
            "UPDATE approvals SET state = $1, decided_at = $2, approver = $3, comment = $4, "  # noqa: S608
            "edited_arguments_json = $5 WHERE tenant = $6 AND approval_id = $7 "
            f"AND state = 'pending' AND expires_at > $2::double precision RETURNING {rows.SELECT}",
            state.value,
            now,
            approver,
            comment,
            edited_arguments_json,
            tenant,
            approval_id,
        )
        return rows.record_of(found[0]) if found else None

    async def expire_approvals(self, tenant: str, approval_ids: Sequence[str], now: float) -> None:
        await self._durable.fetch(
            "UPDATE approvals SET state = 'expired', decided_at = $1 "
            "WHERE tenant = $2 AND state = 'pending' AND approval_id = ANY($3::text[])",
            now,
            tenant,
            list(approval_ids),
        )
