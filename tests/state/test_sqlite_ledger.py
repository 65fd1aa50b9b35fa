"""The embedded ledger's group commits (service/state/sqlite_ledger.py): on the loop when the
file is free, on the store's thread when another writer holds it, the WAL kept in check."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.errors import Unavailable
from service.state.records import AuditEntry, UsageRecord
from service.state.sqlite import SqliteDurable
from service.state.sqlite_ledger import CHECKPOINT_EVERY


def line(n: int) -> UsageRecord:
    return UsageRecord(
        1000.0 + n, "t", "k", f"r{n}", "a", "t-m", "m", 1, 2, 3, "ok", 1, False,
        line_id=f"line-{n}",
    )  # fmt: skip


def entry(n: int) -> AuditEntry:
    return AuditEntry(1000.0 + n, "t", "k", f"r{n}", "call", "agent:a", "ok", entry_id=f"e-{n}")


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteDurable]:
    store = SqliteDurable(tmp_path, timeout_s=5)
    await store.migrate()
    try:
        yield store
    finally:
        await store.aclose()


async def test_concurrent_lines_are_all_committed_with_their_entries(store: SqliteDurable) -> None:
    await asyncio.gather(*(store.record_usage(line(n), entry(n)) for n in range(50)))
    assert count(store.path, "usage_ledger") == 50
    assert count(store.path, "audit_log") == 50
    totals = await store.totals("t", 0, 10_000, [])
    assert (totals[0].calls, totals[0].output_tokens, totals[0].cost_nanos) == (50, 100, 150)


async def test_a_busy_file_sends_the_group_to_the_stores_thread(store: SqliteDurable) -> None:
    """Another writer holds the write lock: the loop does not wait for it, the store's
    thread does, and the line is committed once the lock is free."""
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        writing = asyncio.create_task(store.record_usage(line(1), entry(1)))
        for _ in range(5):  # the loop tries its commit in the next turn, then hands it over
            await asyncio.sleep(0)
        assert not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 5)
    finally:
        other.close()
    assert count(store.path, "usage_ledger") == 1
    assert count(store.path, "audit_log") == 1


async def test_a_line_late_on_the_thread_is_unavailable_and_lands_once(tmp_path: Path) -> None:
    """Past ``timeout_s`` the caller hears UNAVAILABLE (the ledger then keeps the line in its
    outbox); the thread's commit may still land, and writing the line again adds nothing."""
    store = SqliteDurable(tmp_path, timeout_s=0.2)
    await store.migrate()
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        began = time.monotonic()
        with pytest.raises(Unavailable, match=r"did not answer within 0\.2s"):
            await store.record_usage(line(1), entry(1))
        assert time.monotonic() - began < 1.5  # not the thread's 2 s wait for the lock
        other.execute("COMMIT")
        limit = time.monotonic() + 5
        while count(store.path, "usage_ledger") == 0:  # the thread's commit, once free
            assert time.monotonic() < limit
            await asyncio.sleep(0.01)
        await store.record_usage(line(1), entry(1))  # the outbox's replay
    finally:
        other.close()
        await store.aclose()
    assert count(store.path, "usage_ledger") == 1
    assert count(store.path, "audit_log") == 1


async def test_the_wal_is_checkpointed_off_the_loop(store: SqliteDurable) -> None:
    """The loop's connection never checkpoints; the store's thread does every
    CHECKPOINT_EVERY commits, so the WAL file stops growing."""
    wal = store.path.with_name(store.path.name + "-wal")
    for n in range(CHECKPOINT_EVERY + 1):
        await store.record_usage(line(n), entry(n))
    size_after_one_round = wal.stat().st_size
    for n in range(CHECKPOINT_EVERY + 1, 4 * CHECKPOINT_EVERY):
        await store.record_usage(line(n), entry(n))
    assert count(store.path, "usage_ledger") == 4 * CHECKPOINT_EVERY
    assert wal.stat().st_size <= size_after_one_round * 1.5


async def test_lines_waiting_when_the_store_closes_are_committed(tmp_path: Path) -> None:
    store = SqliteDurable(tmp_path, timeout_s=5)
    await store.migrate()
    writes = [asyncio.create_task(store.record_usage(line(n))) for n in range(3)]
    await asyncio.sleep(0)  # each write is waiting for the next turn's commit
    await store.aclose()
    await asyncio.gather(*writes)
    assert count(store.path, "usage_ledger") == 3
    with pytest.raises(Unavailable, match="closed"):
        await store.record_usage(line(99))
