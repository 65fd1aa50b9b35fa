"""The run store behaves the same on SQLite and PostgreSQL: round trip, tenant scope,
paging newest first with filters, one claimer wins (a lease), a save only by the holder
(with its approvals in the same transaction), cancel expires the run's pending approvals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from service.approvals.postgres import PostgresApprovals
from service.approvals.records import ApprovalRecord, ApprovalState, new_approval_id
from service.approvals.sqlite import SqliteApprovals
from service.approvals.store import ApprovalStore
from service.runs.postgres import PostgresRuns
from service.runs.records import RunRecord, RunState, new_run_id
from service.runs.sqlite import SqliteRuns
from service.runs.store import RunStore
from service.secrets import Secret
from service.state.postgres import PostgresDurable
from service.state.sqlite import SqliteDurable
from tests.backends import POSTGRES_DSN, postgres_schema

NOW = 1_800_000_000.0


@dataclass
class Both:
    runs: RunStore
    approvals: ApprovalStore


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Both]:
    if request.param == "sqlite":
        sqlite = SqliteDurable(tmp_path, timeout_s=5)
        await sqlite.migrate()
        try:
            yield Both(SqliteRuns(sqlite.file), SqliteApprovals(sqlite.file))
        finally:
            await sqlite.aclose()
        return
    async with postgres_schema() as schema:
        postgres = PostgresDurable(Secret(POSTGRES_DSN), schema=schema, timeout_s=5)
        await postgres.migrate()
        try:
            yield Both(PostgresRuns(postgres), PostgresApprovals(postgres))
        finally:
            await postgres.aclose()


def run(tenant: str = "t1", at: float = NOW, kind: str = "agent") -> RunRecord:
    return RunRecord(
        new_run_id(), tenant, kind, "operator", RunState.RUNNING, "req-1", "key-1", at, at,
        checkpoint=b'{"v": 1}', owner="replica-a", lease_until=at + 30,
    )  # fmt: skip


def approval(run_id: str, tenant: str = "t1") -> ApprovalRecord:
    return ApprovalRecord(
        new_approval_id(), tenant, run_id, "operator", "add_note", "call_1", "{}",
        "policy: always", ApprovalState.PENDING, NOW, NOW + 3600,
    )  # fmt: skip


async def test_round_trip_scoped_by_tenant_and_paged_newest_first(store: Both) -> None:
    mine = [run(at=NOW + i, kind="agent" if i % 2 else "workflow") for i in range(5)]
    theirs = run(tenant="t2")
    for r in (*mine, theirs):
        await store.runs.create_run(r)
    assert await store.runs.get_run("t1", mine[0].run_id) == mine[0]
    assert await store.runs.get_run("t1", theirs.run_id) is None
    first = await store.runs.list_runs("t1", limit=3)
    assert [r.run_id for r in first] == [r.run_id for r in mine[::-1][:3]]
    rest = await store.runs.list_runs("t1", before=first[-1].run_id, limit=3)
    assert [r.run_id for r in rest] == [mine[1].run_id, mine[0].run_id]
    agents = await store.runs.list_runs("t1", kind="agent")
    assert [r.run_id for r in agents] == [mine[3].run_id, mine[1].run_id]
    assert await store.runs.list_runs("t1", state=RunState.WAITING) == []
    assert await store.runs.list_runs("t2") == [theirs]


async def test_one_claimer_wins_until_the_lease_passes(store: Both) -> None:
    r = run()
    await store.runs.create_run(r)
    parked = replace(r, state=RunState.WAITING, owner="", lease_until=0, pending=("apr_1",))
    assert await store.runs.save_run(parked, owner="replica-a")
    tries = await asyncio.gather(
        *(store.runs.claim_run("t1", r.run_id, f"replica-{i}", NOW + 60, NOW) for i in range(6))
    )
    won = [t for t in tries if t is not None]
    assert len(won) == 1
    assert won[0].state is RunState.RUNNING
    holder = won[0].owner
    assert await store.runs.claim_run("t1", r.run_id, "other", NOW + 90, NOW + 30) is None
    assert await store.runs.claim_run("t2", r.run_id, "other", NOW + 90, NOW + 61) is None
    # The holder died: once its lease passed, another takes it over, and the old holder's
    # save is refused.
    taken = await store.runs.claim_run("t1", r.run_id, "other", NOW + 130, NOW + 61)
    assert taken is not None
    assert taken.owner == "other"
    assert not await store.runs.save_run(replace(taken, steps=9), owner=holder)
    assert (await store.runs.get_run("t1", r.run_id)).steps == 0  # type: ignore[union-attr]


async def test_a_save_writes_its_approvals_in_the_same_transaction(store: Both) -> None:
    r = run()
    await store.runs.create_run(r)
    a = approval(r.run_id)
    parked = replace(
        r, state=RunState.WAITING, owner="", checkpoint=b"{}", steps=2, pending=(a.approval_id,)
    )
    assert await store.runs.save_run(parked, owner="replica-a", approvals=[a])
    assert await store.runs.get_run("t1", r.run_id) == parked
    assert await store.approvals.get_approval("t1", a.approval_id) == a
    # Not the holder: neither the run nor the approval is written.
    b = approval(r.run_id)
    assert not await store.runs.save_run(parked, owner="replica-b", approvals=[b])
    assert await store.approvals.get_approval("t1", b.approval_id) is None


async def test_cancel_ends_the_run_and_expires_its_pending_approvals(store: Both) -> None:
    r, other = run(), run()
    for x in (r, other):
        await store.runs.create_run(x)
    a, b = approval(r.run_id), approval(other.run_id)
    await store.runs.save_run(r, owner="replica-a", approvals=[a])
    await store.runs.save_run(other, owner="replica-a", approvals=[b])
    assert await store.runs.cancel_run("t2", r.run_id, NOW) is None
    cancelled = await store.runs.cancel_run("t1", r.run_id, NOW + 1)
    assert cancelled is not None
    assert cancelled.state is RunState.CANCELLED
    assert (await store.approvals.get_approval("t1", a.approval_id)).state is ApprovalState.EXPIRED  # type: ignore[union-attr]
    assert (await store.approvals.get_approval("t1", b.approval_id)).state is ApprovalState.PENDING  # type: ignore[union-attr]
    assert await store.runs.cancel_run("t1", r.run_id, NOW + 2) is None  # already ended
    assert not await store.runs.save_run(replace(r, steps=3), owner="replica-a")
    assert await store.runs.claim_run("t1", r.run_id, "replica-a", NOW + 60, NOW + 2) is None
