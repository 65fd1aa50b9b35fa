"""The approval store behaves the same on SQLite and PostgreSQL: round trip, tenant scope,
paging newest first, expiry by time, one decision wins, expiry of the undecided."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from service.approvals.postgres import PostgresApprovals
from service.approvals.records import ApprovalRecord, ApprovalState, new_approval_id
from service.approvals.sqlite import SqliteApprovals
from service.approvals.store import ApprovalStore
from service.secrets import Secret
from service.state.postgres import PostgresDurable
from service.state.sqlite import SqliteDurable
from tests.backends import POSTGRES_DSN, postgres_schema

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApprovalStore]:
    if request.param == "sqlite":
        sqlite = SqliteDurable(tmp_path, timeout_s=5)
        await sqlite.migrate()
        try:
            yield SqliteApprovals(sqlite.file)
        finally:
            await sqlite.aclose()
        return
    async with postgres_schema() as schema:
        postgres = PostgresDurable(Secret(POSTGRES_DSN), schema=schema, timeout_s=5)
        await postgres.migrate()
        try:
            yield PostgresApprovals(postgres)
        finally:
            await postgres.aclose()


def approval(tenant: str = "t1", at: float = NOW, expires: float = NOW + 60) -> ApprovalRecord:
    return ApprovalRecord(
        new_approval_id(), tenant, "run_1", "operator", "add_note", "call_1",
        '{"text": "hi"}', "policy: always", ApprovalState.PENDING, at, expires,
        request_id="req-1", step=2,
    )  # fmt: skip


async def test_round_trip_scoped_by_tenant_and_paged_newest_first(store: ApprovalStore) -> None:
    mine = [approval(at=NOW + i) for i in range(5)]
    theirs = approval(tenant="t2")
    await store.insert_approvals([*mine, theirs])
    assert await store.get_approval("t1", mine[0].approval_id) == mine[0]
    assert await store.get_approval("t1", theirs.approval_id) is None
    first = await store.list_approvals("t1", limit=3, now=NOW)
    assert [a.approval_id for a in first] == [a.approval_id for a in mine[::-1][:3]]
    rest = await store.list_approvals("t1", before=first[-1].approval_id, limit=3, now=NOW)
    assert [a.approval_id for a in rest] == [mine[1].approval_id, mine[0].approval_id]
    assert await store.list_approvals("t2", now=NOW) == [theirs]


async def test_one_decision_wins_and_expired_ones_cannot_be_decided(store: ApprovalStore) -> None:
    a, old = approval(), approval(expires=NOW - 1)
    await store.insert_approvals([a, old])
    tries = await asyncio.gather(
        *(
            store.decide_approval(
                "t1",
                a.approval_id,
                state,
                approver=f"k{i}",
                comment="ok",
                edited_arguments_json='{"text": "edited"}',
                now=NOW,
            )
            for i, state in enumerate([ApprovalState.APPROVED, ApprovalState.DENIED] * 3)
        )
    )
    won = [t for t in tries if t is not None]
    assert len(won) == 1
    assert await store.get_approval("t1", a.approval_id) == won[0]
    assert won[0].decided_at == NOW
    assert won[0].comment == "ok"
    assert (
        await store.decide_approval(
            "t1",
            old.approval_id,
            ApprovalState.APPROVED,
            approver="k",
            comment="",
            edited_arguments_json="",
            now=NOW,
        )
        is None
    )
    assert [
        x.approval_id
        for x in await store.list_approvals("t1", state=ApprovalState.EXPIRED, now=NOW)
    ] == [old.approval_id]
    assert await store.list_approvals("t1", state=ApprovalState.PENDING, now=NOW) == []


async def test_expire_leaves_decided_ones_alone(store: ApprovalStore) -> None:
    a, b = approval(), approval()
    await store.insert_approvals([a, b])
    await store.decide_approval(
        "t1", a.approval_id, ApprovalState.APPROVED, approver="k", comment="",
        edited_arguments_json="", now=NOW,
    )  # fmt: skip
    await store.expire_approvals("t1", [a.approval_id, b.approval_id], NOW + 1)
    got = {
        x.approval_id: x for x in await store.get_approvals("t1", [a.approval_id, b.approval_id])
    }
    assert got[a.approval_id].state is ApprovalState.APPROVED
    assert got[b.approval_id] == replace(b, state=ApprovalState.EXPIRED, decided_at=NOW + 1)
