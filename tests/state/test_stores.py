"""The same behaviour from every backend: SQLite and PostgreSQL for durable records, memory
and Redis for fast state."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from service.errors import FailedPrecondition, Unavailable
from service.secrets import Secret
from service.state import schema
from service.state.postgres import PostgresDurable
from service.state.records import AuditEntry, BudgetLine, UsageRecord
from service.state.redis import RedisFast
from service.state.sqlite import SqliteDurable
from service.state.stores import Durable, Fast
from tests.backends import POSTGRES_DSN, postgres_schema
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio


# durable: sessions


async def test_migrate_twice_is_harmless(durable: Durable) -> None:
    await durable.migrate()
    await durable.append("t", "s", "echo", "[]", 1.0)
    await durable.migrate()
    assert (await durable.get("t", "s")) is not None


async def test_session_append_get_turns(durable: Durable) -> None:
    assert await durable.get("t1", "s1") is None
    assert await durable.turns("t1", "s1", 10) == []

    await durable.append("t1", "s1", "echo", '["a"]', 100.0)
    await durable.append("t1", "s1", "echo", '["b"]', 101.0)
    await durable.append("t1", "s1", "echo", '["c"]', 102.0)

    info = await durable.get("t1", "s1")
    assert info is not None
    assert (info.session_id, info.agent, info.turn_count) == ("s1", "echo", 3)
    assert (info.created_at, info.updated_at) == (100.0, 102.0)
    assert [t.messages_json for t in await durable.turns("t1", "s1", 10)] == [
        '["a"]',
        '["b"]',
        '["c"]',
    ]
    newest = await durable.turns("t1", "s1", 2)
    assert [t.seq for t in newest] == [2, 3]


async def test_sessions_are_tenant_scoped(durable: Durable) -> None:
    await durable.append("acme", "shared-id", "echo", '["acme"]', 1.0)

    assert await durable.get("globex", "shared-id") is None
    assert await durable.turns("globex", "shared-id", 10) == []
    assert await durable.list_sessions("globex", "", 10) == []
    assert await durable.delete("globex", "shared-id") is False
    assert (await durable.get("acme", "shared-id")) is not None


async def test_a_session_keeps_its_agent_and_the_store_lists_by_agent(durable: Durable) -> None:
    await durable.append("t", "a1", "chat", '["1"]', 1.0)
    await durable.append("t", "b1", "echo", '["2"]', 2.0)
    # Even when a check before it raced, another agent's append is refused atomically.
    with pytest.raises(FailedPrecondition, match="belongs to another agent"):
        await durable.append("t", "a1", "echo", '["3"]', 3.0)
    info = await durable.get("t", "a1")
    assert info is not None
    assert (info.agent, info.turn_count) == ("chat", 1)
    assert [t.messages_json for t in await durable.turns("t", "a1", 10)] == ['["1"]']

    assert [s.session_id for s in await durable.list_sessions("t", "", 10, {"echo"})] == ["b1"]
    assert [s.session_id for s in await durable.list_sessions("t", "", 10, set())] == []
    assert [s.session_id for s in await durable.list_sessions("t", "", 10)] == ["a1", "b1"]


async def test_concurrent_appends_lose_no_turn(durable: Durable) -> None:
    await asyncio.gather(
        *(durable.append("t", "busy", "echo", f'["{i}"]', float(i)) for i in range(40))
    )

    turns = await durable.turns("t", "busy", 100)
    assert [t.seq for t in turns] == list(range(1, 41))
    assert sorted(t.messages_json for t in turns) == sorted(f'["{i}"]' for i in range(40))
    info = await durable.get("t", "busy")
    assert info is not None
    assert info.turn_count == 40


async def test_list_pages_by_id_and_delete(durable: Durable) -> None:
    for sid in ["c", "a", "b", "d"]:
        await durable.append("t", sid, "echo", "[]", 1.0)

    first = await durable.list_sessions("t", "", 2)
    second = await durable.list_sessions("t", first[-1].session_id, 2)
    assert [s.session_id for s in first + second] == ["a", "b", "c", "d"]

    assert await durable.delete("t", "b") is True
    assert await durable.delete("t", "b") is False
    assert await durable.turns("t", "b", 10) == []
    assert [s.session_id for s in await durable.list_sessions("t", "", 10)] == ["a", "c", "d"]


# durable: usage ledger and audit


def _line(tenant: str, agent: str, model: str, key: str, **kw: object) -> UsageRecord:
    base: dict[str, object] = {
        "at": 1000.0,
        "tenant": tenant,
        "key_id": key,
        "request_id": "r",
        "agent": agent,
        "target": f"t-{model}",
        "model": model,
        "input_tokens": 10,
        "output_tokens": 5,
        "cost_nanos": 700,
        "status": "ok",
        "latency_ms": 3,
        "cache_hit": False,
    }
    base.update(kw)
    return UsageRecord(**base)  # type: ignore[arg-type]


async def test_concurrent_ledger_lines_are_all_committed(durable: Durable) -> None:
    """Calls finishing together (the SQLite store commits them as one group): each returns
    only once its own line is in, and every line is counted once."""
    lines = [_line("t", "echo", "m1", f"k{i % 3}", request_id=f"r{i}") for i in range(60)]
    await asyncio.gather(*(durable.record_usage(line) for line in lines))
    (total,) = await durable.totals("t", 0.0, 2000.0, ())
    assert (total.calls, total.input_tokens) == (60, 600)
    by_key = await durable.totals("t", 0.0, 2000.0, ("key_id",))
    assert [(g.key_id, g.calls) for g in by_key] == [("k0", 20), ("k1", 20), ("k2", 20)]


async def test_usage_totals_grouped_and_ranged(durable: Durable) -> None:
    await durable.record_usage(_line("t", "echo", "m1", "k1"))
    await durable.record_usage(_line("t", "echo", "m1", "k2", cache_hit=True, cost_nanos=0))
    await durable.record_usage(_line("t", "assistant", "m2", "k1", status="Unavailable"))
    await durable.record_usage(_line("t", "echo", "m1", "k1", at=5000.0))  # out of range
    await durable.record_usage(_line("other", "echo", "m1", "k1"))  # other tenant

    (total,) = await durable.totals("t", 0.0, 2000.0, ())
    assert (total.calls, total.failed_calls, total.cache_hits) == (3, 1, 1)
    assert (total.input_tokens, total.output_tokens, total.cost_nanos) == (30, 15, 1400)
    assert (total.agent, total.model, total.key_id) == ("", "", "")

    by_agent = await durable.totals("t", 0.0, 2000.0, ("agent",))
    assert [(g.agent, g.calls, g.cost_nanos) for g in by_agent] == [
        ("assistant", 1, 700),
        ("echo", 2, 700),
    ]
    by_key_model = await durable.totals("t", 0.0, 2000.0, ("key_id", "model"))
    assert [(g.model, g.key_id, g.calls) for g in by_key_model] == [
        ("m1", "k1", 1),
        ("m1", "k2", 1),
        ("m2", "k1", 1),
    ]
    assert await durable.totals("nobody", 0.0, 2000.0, ()) == []


async def test_usage_and_audit_in_one_write(durable: Durable) -> None:
    entry = AuditEntry(5.0, "t", "k", "r", "call", "agent:echo", "ok")
    await durable.record_usage(_line("t", "echo", "m1", "k"), entry)
    assert await durable.recent_audit("t", 10) == [entry]
    (total,) = await durable.totals("t", 0.0, 2000.0, ())
    assert total.calls == 1


async def test_a_turn_with_its_ledger_line_and_audit_entry(durable: Durable) -> None:
    entry = AuditEntry(5.0, "t", "k", "r", "call", "agent:echo", "ok")
    await durable.append(
        "t", "s", "echo", "[]", 5.0, usage=_line("t", "echo", "m1", "k"), audit=entry
    )
    assert [t.seq for t in await durable.turns("t", "s", 5)] == [1]
    assert await durable.recent_audit("t", 10) == [entry]
    assert (await durable.totals("t", 0.0, 2000.0, ()))[0].calls == 1


async def test_audit_newest_first_and_tenant_scoped(durable: Durable) -> None:
    for i in range(3):
        await durable.audit(AuditEntry(float(i), "t", "k", f"r{i}", "Invoke", "echo", "ok"))
    await durable.audit(AuditEntry(9.0, "u", "k", "x", "Invoke", "echo", "ok"))

    entries = await durable.recent_audit("t", 2)
    assert [e.request_id for e in entries] == ["r2", "r1"]
    assert entries[0] == AuditEntry(2.0, "t", "k", "r2", "Invoke", "echo", "ok")


async def test_a_line_written_twice_lands_once(durable: Durable) -> None:
    # An outbox replay cut short and run again writes the same lines again.
    line = _line("t", "echo", "m", "k", request_id="once", line_id="L1")
    entry = AuditEntry(5.0, "t", "k", "once", "call", "agent:echo", "ok", entry_id="A1")
    await durable.record_usage(line, entry)
    await durable.record_usage(line, entry)
    await durable.audit(entry)
    (total,) = await durable.totals("t", 0, 10_000, ())
    assert total.calls == 1
    assert [e.request_id for e in await durable.recent_audit("t", 10)] == ["once"]
    # Lines without an id are never taken for one another.
    await durable.record_usage(_line("t", "echo", "m", "k", request_id="a"))
    await durable.record_usage(_line("t", "echo", "m", "k", request_id="a"))
    (total,) = await durable.totals("t", 0, 10_000, ())
    assert total.calls == 3


async def test_durable_idempotency_records(durable: Durable) -> None:
    first = await durable.claim("t:k:r1", "fp", 30)
    assert first.state == "new"
    again = await durable.claim("t:k:r1", "fp2", 30)
    assert (again.state, again.fingerprint) == ("pending", "fp")

    await durable.complete("t:k:r1", "fp", b"\x01resp", 30)
    done = await durable.claim("t:k:r1", "fp", 30)
    assert (done.state, done.fingerprint, done.result) == ("done", "fp", b"\x01resp")

    assert (await durable.claim("t:k:r2", "x", 30)).state == "new"
    await durable.abandon("t:k:r2")
    assert (await durable.claim("t:k:r2", "y", 30)).state == "new"
    await durable.abandon("t:k:r1")  # only a pending claim is freed: an answer stays
    assert (await durable.claim("t:k:r1", "fp", 30)).state == "done"

    assert (await durable.claim("t:k:short", "x", 0.05)).state == "new"

    async def lapsed() -> bool:
        return (await durable.claim("t:k:short", "y", 30)).state == "new"

    await eventually(lapsed)


# fast: cache and idempotency


async def test_cache_get_put_expires(fast: Fast) -> None:
    assert await fast.get("k") is None
    await fast.put("k", b"\x00answer", 60)
    assert await fast.get("k") == b"\x00answer"
    await fast.put("short", b"x", 0.05)

    async def gone() -> bool:
        return await fast.get("short") is None

    await eventually(gone)


async def test_cache_fill_lease(fast: Fast, request: pytest.FixtureRequest) -> None:
    assert await fast.lead("k", "t1", 30)
    shared = "redis" in request.node.callspec.id
    # Across processes only one holds the lease; one process needs none (single-flight there
    # is in-process).
    assert await fast.lead("k", "t2", 30) is not shared
    await fast.unlead("k", "t2")  # not the holder: no effect
    assert await fast.lead("k", "t3", 30) is not shared
    await fast.unlead("k", "t1")
    assert await fast.lead("k", "t3", 30)


async def test_idempotency_claim_complete_abandon(fast: Fast) -> None:
    first = await fast.claim("t:k:r1", "fp", 30)
    assert first.state == "new"
    again = await fast.claim("t:k:r1", "fp2", 30)
    assert (again.state, again.fingerprint) == ("pending", "fp")

    await fast.complete("t:k:r1", "fp", b"\x01resp", 30)
    done = await fast.claim("t:k:r1", "fp", 30)
    assert (done.state, done.fingerprint, done.result) == ("done", "fp", b"\x01resp")

    assert (await fast.claim("t:k:r2", "x", 30)).state == "new"
    await fast.abandon("t:k:r2")
    assert (await fast.claim("t:k:r2", "y", 30)).state == "new"


# stores that are down


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_down_is_unavailable_not_a_hang() -> None:
    store = RedisFast(f"redis://127.0.0.1:{_closed_port()}/0", prefix="x", timeout_s=1)
    day = BudgetLine("tenant:t:daily:2026-01-01", limit_nanos=100, ttl_s=3600)
    try:
        with pytest.raises(Unavailable, match="state store redis is unavailable"):
            await store.reserve([day], "r", 1, 1, "")
        with pytest.raises(Unavailable, match="redis"):
            await store.ping()
    finally:
        await store.aclose()


async def test_postgres_down_is_unavailable_without_the_dsn() -> None:
    dsn = f"postgresql://postgres:hunter2@127.0.0.1:{_closed_port()}/test"
    store = PostgresDurable(Secret(dsn), timeout_s=1)
    try:
        with pytest.raises(Unavailable, match="state store postgres") as caught:
            await store.get("t", "s")
        assert "hunter2" not in str(caught.value)
    finally:
        await store.aclose()


async def test_usage_dimensions_are_recorded_and_summed(durable: Durable) -> None:
    dims = {
        "cached_input_tokens": 4,
        "cache_creation_5m_input_tokens": 3,
        "cache_creation_1h_input_tokens": 2,
        "reasoning_tokens": 1,
    }
    await durable.record_usage(_line("t", "echo", "m1", "k1", **dims))
    await durable.record_usage(_line("t", "echo", "m1", "k1", estimated=True, **dims))
    await durable.record_usage(_line("t", "echo", "m2", "k1"))

    (total,) = await durable.totals("t", 0.0, 2000.0, ())
    assert (total.calls, total.estimated_calls) == (3, 1)
    assert (total.cached_input_tokens, total.reasoning_tokens) == (8, 2)
    assert (total.cache_creation_5m_input_tokens, total.cache_creation_1h_input_tokens) == (6, 4)
    by_model = await durable.totals("t", 0.0, 2000.0, ("model",))
    assert [(g.model, g.cached_input_tokens, g.estimated_calls) for g in by_model] == [
        ("m1", 8, 1),
        ("m2", 0, 0),
    ]


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
async def test_a_ledger_of_schema_v1_migrates_and_keeps_its_lines(
    dialect: str, tmp_path: Path
) -> None:
    v1_line = (
        "INSERT INTO usage_ledger (at, tenant, key_id, request_id, agent, target, model, "
        "input_tokens, output_tokens, cost_nanos, status, latency_ms, cache_hit) "
        "VALUES (1.0, 't', 'k', 'r', 'a', 'x', 'm', 10, 5, 700, 'ok', 3, FALSE)"
    )
    v1 = [*schema.statements(dialect, 1), v1_line]
    if dialect == "sqlite":
        conn = sqlite3.connect(tmp_path / "switchboard.sqlite3")
        conn.execute(schema.VERSION_TABLE)
        for statement in v1:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.commit()
        conn.close()
        store: Durable = SqliteDurable(tmp_path, timeout_s=5)
        await _migrated_totals(store)
        return
    async with postgres_schema() as name:
        pg = await asyncpg.connect(POSTGRES_DSN)
        try:
            await pg.execute(f'CREATE SCHEMA "{name}"')
            await pg.execute(f'SET search_path TO "{name}"')
            await pg.execute(schema.VERSION_TABLE)
            for statement in v1:
                await pg.execute(statement)
            await pg.execute("INSERT INTO schema_version VALUES (1)")
        finally:
            await pg.close()
        await _migrated_totals(PostgresDurable(Secret(POSTGRES_DSN), schema=name, timeout_s=5))


async def _migrated_totals(store: Durable) -> None:
    try:
        await store.migrate()
        await store.record_usage(_line("t", "a", "m", "k", reasoning_tokens=2, estimated=True))
        (total,) = await store.totals("t", 0.0, 2000.0, ())
    finally:
        await store.aclose()
    assert (total.calls, total.input_tokens, total.cost_nanos) == (2, 20, 1400)
    assert (total.reasoning_tokens, total.estimated_calls) == (2, 1)
