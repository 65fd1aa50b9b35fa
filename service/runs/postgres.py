"""Runs on PostgreSQL (see :mod:`service.runs.store`), through the pool of
:class:`~service.state.postgres.PostgresDurable`: every replica sees the same rows; a claim
is one conditional UPDATE, so two replicas never both resume a run."""

from __future__ import annotations

from collections.abc import Sequence

from service.approvals import rows as approval_rows
from service.approvals.records import ApprovalRecord
from service.runs import rows
from service.runs.records import RunRecord, RunState
from service.state.postgres import PostgresDurable


def _marks(n: int, start: int = 1) -> str:
    return ", ".join(f"${i}" for i in range(start, start + n))


_INSERT = f"INSERT INTO runs ({rows.SELECT}) VALUES ({_marks(len(rows.COLUMNS))})"  # noqa: S608
_INSERT_APPROVAL = (
    f"INSERT INTO approvals ({approval_rows.SELECT}) "  # noqa: S608 (constants)
    f"VALUES ({_marks(len(approval_rows.COLUMNS))})"
)
_N = len(rows.SAVED)
_SAVE = (
    f"UPDATE runs SET {', '.join(f'{c} = ${i}' for i, c in enumerate(rows.SAVED, 1))} "  # noqa: S608
    f"WHERE tenant = ${_N + 1} AND run_id = ${_N + 2} AND owner = ${_N + 3} "
    "AND state IN ('running', 'waiting')"
)


class PostgresRuns:
    """See the module docstring."""

    def __init__(self, durable: PostgresDurable) -> None:
        self._durable = durable

    async def create_run(self, run: RunRecord) -> None:
        await self._durable.fetch(_INSERT, *rows.values(run))

    async def get_run(self, tenant: str, run_id: str) -> RunRecord | None:
        found = await self._durable.fetch(
            f"SELECT {rows.SELECT} FROM runs WHERE tenant = $1 AND run_id = $2",  # noqa: S608
            tenant,
            run_id,
        )
        return rows.record_of(found[0]) if found else None

    async def list_runs(
        self,
        tenant: str,
        *,
        before: str = "",
        limit: int = 100,
        kind: str = "",
        state: RunState | None = None,
    ) -> list[RunRecord]:
        found = await self._durable.fetch(
            f"SELECT {rows.SELECT} FROM runs WHERE tenant = $1 "  # noqa: S608
            "AND ($2::text = '' OR kind = $2::text) AND ($3::text = '' OR state = $3::text) "
            "AND ($4::text = '' OR (created_at, run_id) < "
            "(SELECT created_at, run_id FROM runs WHERE tenant = $1 AND run_id = $4::text)) "
            "ORDER BY created_at DESC, run_id DESC LIMIT $5",
            tenant,
            kind,
            state.value if state else "",
            before,
            limit,
        )
        return [rows.record_of(r) for r in found]

    async def claim_run(
        self, tenant: str, run_id: str, owner: str, lease_until: float, now: float
    ) -> RunRecord | None:
        found = await self._durable.fetch(
            "UPDATE runs SET state = 'running', owner = $1, lease_until = $2, updated_at = $3 "  # noqa: S608
            "WHERE tenant = $4 AND run_id = $5 AND state IN ('running', 'waiting') "
            "AND (owner = '' OR owner = $1 OR lease_until < $3) "
            f"RETURNING {rows.SELECT}",
            owner,
            lease_until,
            now,
            tenant,
            run_id,
        )
        return rows.record_of(found[0]) if found else None

    async def save_run(
        self, run: RunRecord, *, owner: str, approvals: Sequence[ApprovalRecord] = ()
    ) -> bool:
        async with self._durable.transaction() as conn:
            done = await conn.execute(_SAVE, *rows.saved_values(run), run.tenant, run.run_id, owner)
            if done.endswith(" 0"):
                return False
            if approvals:
                await conn.executemany(
                    _INSERT_APPROVAL, [approval_rows.values(a) for a in approvals]
                )
            return True

    async def cancel_run(self, tenant: str, run_id: str, now: float) -> RunRecord | None:
        async with self._durable.transaction() as conn:
            found = await conn.fetch(
                "UPDATE runs SET state = 'cancelled', owner = '', lease_until = 0, "  # noqa: S608
                "pending = '', updated_at = $1 WHERE tenant = $2 AND run_id = $3 "
                f"AND state IN ('running', 'waiting') RETURNING {rows.SELECT}",
                now,
                tenant,
                run_id,
            )
            if not found:
                return None
            await conn.execute(
                "UPDATE approvals SET state = 'expired', decided_at = $1 "
                "WHERE tenant = $2 AND run_id = $3 AND state = 'pending'",
                now,
                tenant,
                run_id,
            )
            return rows.record_of(found[0])
