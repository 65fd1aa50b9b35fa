"""Processes opening one new SQLite file at once all get it in WAL mode (the workers of
``serve --workers N`` on a fresh embedded store: one of them failed at start with "database is
locked", since SQLite's switch to WAL does not wait for the busy timeout)."""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import sqlite3
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from service.state.sqlite import SqliteDurable
from service.state.sqlite_file import use_wal

PROCESSES = 4


def set_start_line(start_at: Synchronized[float]) -> None:
    """The barrier's action, run by the last process to reach it."""
    start_at.value = time.time() + 0.05


def open_and_migrate(folder: str, barrier: Barrier, start_at: Synchronized[float]) -> None:
    """One worker's start: open the store and migrate it, every process at the same instant
    (a barrier once all are ready, then a start line on the clock: a barrier alone wakes its
    waiters one by one, too far apart to meet)."""

    async def start() -> None:
        store = SqliteDurable(Path(folder), timeout_s=10)
        barrier.wait(timeout=30)
        while time.time() < start_at.value:
            pass
        try:
            await store.migrate()
        finally:
            await store.aclose()

    asyncio.run(start())


@pytest.mark.parametrize("round_", range(10))
def test_workers_opening_a_new_file_at_once_all_start(tmp_path: Path, round_: int) -> None:
    spawn = multiprocessing.get_context("spawn")
    start_at = spawn.Value("d", 0.0)
    barrier = spawn.Barrier(PROCESSES, action=functools.partial(set_start_line, start_at))
    workers = [
        spawn.Process(target=open_and_migrate, args=(str(tmp_path), barrier, start_at))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    with sqlite3.connect(tmp_path / "switchboard.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_file_held_past_the_timeout_is_an_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "held.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        other = sqlite3.connect(path, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            use_wal(other, 0.2)
        other.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
