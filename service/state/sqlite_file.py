"""One SQLite file used through one connection on one thread: the embedded durable store and
the outbox both work this way (sqlite3 connections are not shared across threads, and one
writer thread makes every write to the file serial)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from service.state.guard import guarded

T = TypeVar("T")

BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
"""Primary result codes of a file another connection holds (``exc.sqlite_errorcode & 0xFF``)."""


def use_wal(conn: sqlite3.Connection, timeout_s: float) -> None:
    """Put ``conn``'s file in WAL mode (the file keeps it for every later connection:
    https://sqlite.org/wal.html, "Persistence of WAL mode"), waiting up to ``timeout_s`` for
    another connection that holds the file.

    The switch takes the file's exclusive lock without calling the busy handler: two
    processes opening a new file at once (the workers of ``serve --workers N``) saw one of
    them fail at start with "database is locked", whatever ``busy_timeout`` said. A file
    already in WAL mode is only read.

    Raises:
        sqlite3.Error: the file stayed locked past ``timeout_s``, or cannot use WAL.
    """
    give_up = time.monotonic() + timeout_s
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode != "wal":
                mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in BUSY or time.monotonic() >= give_up:
                raise
            time.sleep(0.01)
            continue
        if mode != "wal":
            raise sqlite3.OperationalError(f"the file's journal mode stays {mode}, not wal")
        return


class SqliteFile:
    """``path`` opened lazily (its folder created) in WAL mode with ``synchronous`` and
    ``busy_timeout_ms``, then ``setup`` run once. :meth:`run` bounds each trip by
    ``timeout_s`` and maps ``sqlite3.Error`` as :func:`service.state.guard.guarded` does,
    naming the store ``name``."""

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        timeout_s: float,
        synchronous: str,
        busy_timeout_ms: int,
        setup: str | None = None,
    ) -> None:
        self.path = path
        self._name = name
        self._timeout_s = timeout_s
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._pragmas = (
            f"PRAGMA synchronous={synchronous}",
            f"PRAGMA busy_timeout={busy_timeout_ms}",
        )
        self._setup = setup
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            use_wal(conn, self._busy_timeout_s)
            for pragma in self._pragmas:
                conn.execute(pragma)
            if self._setup is not None:
                conn.execute(self._setup)
            self._conn = conn
        return self._conn

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the file's thread, bounded and with errors mapped."""
        loop = asyncio.get_running_loop()
        async with guarded(self._name, self._timeout_s, (sqlite3.Error,)):
            return await loop.run_in_executor(self._thread, lambda: fn(self._connect()))

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[sqlite3.Connection], None]
    ) -> asyncio.Future[None]:
        """``fn(connection)`` on the file's thread, unbounded: for a caller that settles the
        future's waiters itself (the ledger's group commit)."""
        return loop.run_in_executor(self._thread, lambda: fn(self._connect()))

    async def aclose(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown(wait=False)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """The block in one transaction on ``conn`` (opened with ``isolation_level=None``):
    ``BEGIN IMMEDIATE`` takes the write lock up front (or raises, e.g. busy: nothing begun),
    so a write never has to upgrade a read lock mid-way; ``COMMIT`` when the block ends,
    ``ROLLBACK`` when it raises (anything, cancellation included), and the error goes on."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
