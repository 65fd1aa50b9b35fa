"""Runs in the embedded SQLite file (see :mod:`service.runs.store`): the same file,
connection and thread as the approvals, so a run's checkpoint and its new approvals are
one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from service.approvals import rows as approval_rows
from service.approvals.records import ApprovalRecord
from service.runs import rows
from service.runs.records import RunRecord, RunState
from service.state.sqlite_file import SqliteFile

_INSERT = (
    f"INSERT INTO runs ({rows.SELECT}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join('?' * len(rows.COLUMNS))})"
)
_INSERT_APPROVAL = (
    f"INSERT INTO approvals ({approval_rows.SELECT}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join('?' * len(approval_rows.COLUMNS))})"
)
_SAVE = (
    f"UPDATE runs SET {', '.join(f'{c} = ?' for c in rows.SAVED)} "  # noqa: S608 (constants)
    "WHERE tenant = ? AND run_id = ? AND owner = ? AND state IN ('running', 'waiting')"
)


class SqliteRuns:
    """See the module docstring."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    async def create_run(self, run: RunRecord) -> None:
        def run_(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(_INSERT, rows.values(run))

        await self._db.run(run_)

    async def get_run(self, tenant: str, run_id: str) -> RunRecord | None:
        found = await self._db.run(
            lambda conn: conn.execute(
                f"SELECT {rows.SELECT} FROM runs WHERE tenant = ? AND run_id = ?",  # noqa: S608
                (tenant, run_id),
            ).fetchone()
        )
        return None if found is None else rows.record_of(found)

    async def list_runs(
        self,
        tenant: str,
        *,
        before: str = "",
        limit: int = 100,
        kind: str = "",
        state: RunState | None = None,
    ) -> list[RunRecord]:
        sql = (
            f"SELECT {rows.SELECT} FROM runs WHERE tenant = :tenant "  # noqa: S608
            "AND (:kind = '' OR kind = :kind) AND (:state = '' OR state = :state) "
            "AND (:before = '' OR (created_at, run_id) < "
            "(SELECT created_at, run_id FROM runs WHERE tenant = :tenant AND run_id = :before)) "
            "ORDER BY created_at DESC, run_id DESC LIMIT :limit"
        )
        params = {
            "tenant": tenant,
            "kind": kind,
            "state": state.value if state else "",
            "before": before,
            "limit": limit,
        }
        found = await self._db.run(lambda conn: conn.execute(sql, params).fetchall())
        return [rows.record_of(r) for r in found]

    async def claim_run(
        self, tenant: str, run_id: str, owner: str, lease_until: float, now: float
    ) -> RunRecord | None:
        def run_(conn: sqlite3.Connection) -> RunRecord | None:
            with conn:
                row = conn.execute(
                    "UPDATE runs SET state = 'running', owner = ?, lease_until = ?, "  # noqa: S608
                    "updated_at = ? WHERE tenant = ? AND run_id = ? "
                    "AND state IN ('running', 'waiting') "
                    "AND (owner = '' OR owner = ? OR lease_until < ?) "
                    f"RETURNING {rows.SELECT}",
                    (owner, lease_until, now, tenant, run_id, owner, now),
                ).fetchone()
            return None if row is None else rows.record_of(row)

        return await self._db.run(run_)

    async def save_run(
        self, run: RunRecord, *, owner: str, approvals: Sequence[ApprovalRecord] = ()
    ) -> bool:
        def run_(conn: sqlite3.Connection) -> bool:
            with conn:
                done = conn.execute(
                    _SAVE, (*rows.saved_values(run), run.tenant, run.run_id, owner)
                ).rowcount
                if done and approvals:
                    conn.executemany(_INSERT_APPROVAL, [approval_rows.values(a) for a in approvals])
            return bool(done)

        return await self._db.run(run_)

    async def cancel_run(self, tenant: str, run_id: str, now: float) -> RunRecord | None:
        def run_(conn: sqlite3.Connection) -> RunRecord | None:
            with conn:
                row = conn.execute(
                    "UPDATE runs SET state = 'cancelled', owner = '', lease_until = 0, "  # noqa: S608
                    "pending = '', updated_at = ? WHERE tenant = ? AND run_id = ? "
                    f"AND state IN ('running', 'waiting') RETURNING {rows.SELECT}",
                    (now, tenant, run_id),
                ).fetchone()
                if row is not None:
                    conn.execute(
                        "UPDATE approvals SET state = 'expired', decided_at = ? "
                        "WHERE tenant = ? AND run_id = ? AND state = 'pending'",
                        (now, tenant, run_id),
                    )
            return None if row is None else rows.record_of(row)

        return await self._db.run(run_)
