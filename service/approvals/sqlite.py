"""Approvals in the embedded SQLite file (see :mod:`service.approvals.store`): the same
file, connection and thread as the other embedded stores, so writes are serialised."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from service.approvals import rows
from service.approvals.records import ApprovalRecord, ApprovalState
from service.state.sqlite_file import SqliteFile

_INSERT = (
    f"INSERT INTO approvals ({rows.SELECT}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join('?' * len(rows.COLUMNS))})"
)


class SqliteApprovals:
    """See the module docstring."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    async def insert_approvals(self, approvals: Sequence[ApprovalRecord]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.executemany(_INSERT, [rows.values(a) for a in approvals])

        await self._db.run(run)

    async def get_approval(self, tenant: str, approval_id: str) -> ApprovalRecord | None:
        found = await self.get_approvals(tenant, [approval_id])
        return found[0] if found else None

    async def get_approvals(self, tenant: str, approval_ids: Sequence[str]) -> list[ApprovalRecord]:
        ids = list(approval_ids)
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        found = await self._db.run(
            lambda conn: conn.execute(
                f"SELECT {rows.SELECT} FROM approvals "  # noqa: S608
                f"WHERE tenant = ? AND approval_id IN ({marks})",
                (tenant, *ids),
            ).fetchall()
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
        where = rows.state_filter(state).format(now=":now")
        sql = (
            f"SELECT {rows.SELECT} FROM approvals WHERE tenant = :tenant AND {where} "  # noqa: S608
            "AND (:run_id = '' OR run_id = :run_id) "
            "AND (:before = '' OR (created_at, approval_id) < "
            "(SELECT created_at, approval_id FROM approvals "
            "WHERE tenant = :tenant AND approval_id = :before)) "
            "ORDER BY created_at DESC, approval_id DESC LIMIT :limit"
        )
        params = {"tenant": tenant, "now": now, "run_id": run_id, "before": before, "limit": limit}
        found = await self._db.run(lambda conn: conn.execute(sql, params).fetchall())
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
        def run(conn: sqlite3.Connection) -> ApprovalRecord | None:
            row = conn.execute(
                f"UPDATE approvals SET state = ?, decided_at = ?, approver = ?, "  # noqa: S608
                "comment = ?, edited_arguments_json = ? "
                "WHERE tenant = ? AND approval_id = ? AND state = 'pending' AND expires_at > ? "
                f"RETURNING {rows.SELECT}",
                (state.value, now, approver, comment, edited_arguments_json,
                 tenant, approval_id, now),
            ).fetchone()  # fmt: skip
            conn.commit()
            return None if row is None else rows.record_of(row)

        return await self._db.run(run)

    async def expire_approvals(self, tenant: str, approval_ids: Sequence[str], now: float) -> None:
        ids = list(approval_ids)
        marks = ", ".join("?" * len(ids))

        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "UPDATE approvals SET state = 'expired', decided_at = ? "  # noqa: S608
                    f"WHERE tenant = ? AND state = 'pending' AND approval_id IN ({marks})",
                    (now, tenant, *ids),
                )

        if ids:
            await self._db.run(run)
