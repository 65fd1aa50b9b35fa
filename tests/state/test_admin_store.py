"""The admin store (API keys, cross-tenant reports) behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.auth.keys import new_key
from service.secrets import Secret
from service.state.admin_postgres import PostgresAdmin
from service.state.admin_sqlite import SqliteAdmin
from service.state.admin_store import AdminStore
from service.state.postgres import PostgresDurable
from service.state.records import UsageRecord
from service.state.sqlite import SqliteDurable
from service.state.stores import Durable
from tests.backends import POSTGRES_DSN, postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Durable, AdminStore]]:
    if request.param == "sqlite":
        sqlite = SqliteDurable(tmp_path, timeout_s=5)
        await sqlite.migrate()
        try:
            yield sqlite, SqliteAdmin(sqlite.file)
        finally:
            await sqlite.aclose()
        return
    async with postgres_schema() as schema:
        postgres = PostgresDurable(Secret(POSTGRES_DSN), schema=schema, timeout_s=5)
        await postgres.migrate()
        try:
            yield postgres, PostgresAdmin(postgres)
        finally:
            await postgres.aclose()


async def test_keys_round_trip_and_every_write_is_a_new_revision(
    stores: tuple[Durable, AdminStore],
) -> None:
    _, admin = stores
    assert await admin.keys_since(0) == (0, [])
    _, a = new_key("acme", agents=["echo"], scopes=["admin"], note="ops", source="store")
    _, b = new_key("globex", source="store", expires_at=2e9)
    r1 = await admin.insert_key(a)
    r2 = await admin.insert_key(b)
    assert r2 > r1
    assert await admin.get_key(a.id) == a
    assert await admin.get_key("000000000000") is None
    revision, changed = await admin.keys_since(0)
    assert revision == r2
    assert [k.id for k in changed] == [a.id, b.id]
    assert await admin.keys_since(revision) == (revision, [])

    revoked = await admin.revoke_key(a.id, 1234.0)
    assert revoked is not None
    assert revoked.revoked_at == 1234.0
    again = await admin.revoke_key(a.id, 9999.0)  # already revoked: unchanged, no new revision
    assert again == revoked
    revision2, changed = await admin.keys_since(revision)
    assert [k.id for k in changed] == [a.id]
    assert await admin.keys_since(revision2) == (revision2, [])
    assert await admin.revoke_key("000000000000", 1.0) is None


async def test_a_rotation_adds_the_new_key_and_shortens_the_old_in_one_write(
    stores: tuple[Durable, AdminStore],
) -> None:
    _, admin = stores
    _, old = new_key("acme", source="store", expires_at=5000.0)
    start = await admin.insert_key(old)
    _, new = new_key("acme", source="store", rotated_from=old.id)
    await admin.insert_key(new, expire=(old.id, 4000.0))
    _, changed = await admin.keys_since(start)
    assert {k.id for k in changed} == {old.id, new.id}
    stored = await admin.get_key(old.id)
    assert stored is not None
    assert stored.expires_at == 4000.0
    # A later expiry never lengthens an earlier one.
    _, newer = new_key("acme", source="store")
    await admin.insert_key(newer, expire=(old.id, 6000.0))
    stored = await admin.get_key(old.id)
    assert stored is not None
    assert stored.expires_at == 4000.0
    fetched = await admin.get_key(new.id)
    assert fetched is not None
    assert fetched.rotated_from == old.id


async def test_list_keys_pages_filters_by_tenant_and_hides_revoked(
    stores: tuple[Durable, AdminStore],
) -> None:
    _, admin = stores
    records = [new_key(t, source="store")[1] for t in ("acme", "acme", "globex", "acme")]
    for r in records:
        await admin.insert_key(r)
    await admin.revoke_key(records[1].id, 1.0)
    ids = sorted(r.id for r in records)
    every = await admin.list_keys(None, "", 10, include_revoked=True)
    assert [k.id for k in every] == ids
    first = await admin.list_keys(None, "", 2, include_revoked=True)
    rest = await admin.list_keys(None, first[-1].id, 10, include_revoked=True)
    assert [k.id for k in first + rest] == ids
    acme = await admin.list_keys("acme", "", 10, include_revoked=False)
    assert {k.id for k in acme} == {records[0].id, records[3].id}


def _line(
    at: float, tenant: str, agent: str, model: str, cost: int, status: str = "ok"
) -> UsageRecord:
    return UsageRecord(
        at=at, tenant=tenant, key_id=f"k-{tenant}", request_id=f"r{at}", agent=agent,
        target="t", model=model, input_tokens=10, output_tokens=5, cost_nanos=cost,
        status=status, latency_ms=7, cache_hit=False,
    )  # fmt: skip


async def test_usage_report_across_tenants_by_bucket_and_recent_calls(
    stores: tuple[Durable, AdminStore],
) -> None:
    durable, admin = stores
    lines = [
        _line(3600.0, "acme", "echo", "m1", 100),
        _line(3700.0, "acme", "echo", "m1", 200, status="Unavailable"),
        _line(3800.0, "globex", "echo", "m2", 50),
        _line(7300.0, "acme", "assistant", "m1", 1000),
        _line(9000.0, "globex", "echo", "m2", 7),  # outside the range
    ]
    await asyncio.gather(*(durable.record_usage(line) for line in lines))
    total = await admin.usage_report(0.0, 8000.0, [], None, None)
    assert len(total) == 1
    assert (total[0].totals.calls, total[0].totals.failed_calls, total[0].totals.cost_nanos) == (
        4,
        1,
        1350,
    )
    assert total[0].bucket_start == 0.0
    rows = await admin.usage_report(0.0, 8000.0, ["tenant", "agent"], 3600.0, None)
    assert [
        (r.bucket_start, r.tenant, r.totals.agent, r.totals.calls, r.totals.cost_nanos)
        for r in rows
    ] == [
        (3600.0, "acme", "echo", 2, 300),
        (3600.0, "globex", "echo", 1, 50),
        (7200.0, "acme", "assistant", 1, 1000),
    ]
    by_model = await admin.usage_report(0.0, 8000.0, ["model"], None, "acme")
    assert [(r.totals.model, r.totals.calls, r.tenant) for r in by_model] == [("m1", 3, "")]
    assert await admin.usage_report(0.0, 100.0, ["tenant"], 60.0, None) == []

    recent = await admin.recent_calls(3, None)
    assert [c.at for c in recent] == [9000.0, 7300.0, 3800.0]
    assert recent[1].agent == "assistant"
    assert recent[1].tenant == "acme"
    assert [c.tenant for c in await admin.recent_calls(10, "globex")] == ["globex", "globex"]
