"""The embedded store's ledger writes: group commits on the event loop, the file's thread
when the file is busy.

Every answered call writes one ledger line (and its audit entry) and is told it happened only
once the line is committed. A trip to the store's thread for each line cost more than the
commit itself (a thread wake-up and the loop's wake-up back; measured with bench/bench.py:
see docs/benchmarks.md), so lines are committed here, on the loop, through a connection of
their own:

- lines recorded while the loop runs one turn wait for the next turn and are committed
  together, in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``);
- that connection never waits for SQLite's write lock (``busy_timeout`` 0): when another
  writer holds it (the store's thread, another worker process), the group goes to the
  store's thread instead, which waits for the lock as every other statement does, bounded
  by ``timeout_s``;
- it never checkpoints the WAL either (``wal_autocheckpoint`` 0: a checkpoint syncs the
  file to disk): every ``CHECKPOINT_EVERY`` commits, a checkpoint runs on the store's
  thread, and the groups recorded until it ends wait behind it on that thread (racing it
  from the loop would starve it: its busy handler sleeps while the loop takes the lock).

With ``synchronous=NORMAL`` in WAL mode a commit is a write to the WAL file, not a sync: it
survives the process being killed, as it did on the thread. Each waiting caller hears
``Unavailable`` if its group was not committed (or not within ``timeout_s`` on the thread:
a line committed after that is written again from the outbox, and the store keeps one copy
of a line id).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path

from service.errors import SwitchboardError, Unavailable
from service.state.guard import unavailable
from service.state.records import AuditEntry, UsageRecord
from service.state.sqlite_file import BUSY, SqliteFile, transaction, use_wal

CHECKPOINT_EVERY = 256  # loop commits between WAL checkpoints on the store's thread

Line = tuple[UsageRecord, AuditEntry | None, asyncio.Future[None]]
Insert = Callable[[sqlite3.Connection, UsageRecord, AuditEntry | None], None]


class GroupCommit:
    """See the module docstring. ``insert`` writes one line (and entry) inside a transaction;
    ``db`` is the store's file (its thread takes the groups the loop cannot)."""

    def __init__(self, path: Path, db: SqliteFile, insert: Insert, *, timeout_s: float) -> None:
        self._path = path
        self._db = db
        self._insert = insert
        self._timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[Line] = []
        self._scheduled = False
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._closed = False

    async def write(self, record: UsageRecord, audit: AuditEntry | None) -> None:
        """Return once the line (and ``audit``) is committed.

        Raises:
            Unavailable: the group's commit failed, or took longer than ``timeout_s`` on
                the store's thread.
        """
        if self._closed:
            raise Unavailable("state store sqlite is closed")
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[None] = loop.create_future()
        self._waiting.append((record, audit, committed))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush, loop)
        # Not shielded: a caller that leaves cancels only its own future; its line is still
        # committed with the group.
        await committed

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        group, self._waiting = self._waiting, []
        if not group:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            # Queued behind the checkpoint on the store's thread: commits racing it from the
            # loop took the write lock first each time the checkpoint's busy handler looked,
            # so it ran hundreds of commits late and the WAL grew past its bound.
            self._on_thread(loop, group)
            return
        try:
            self._commit(self._connection(), group)
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode & 0xFF in BUSY:
                self._on_thread(loop, group)
                return
            _settle(group, functools.partial(unavailable, "sqlite", exc))
            return
        _settle(group, None)
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY == 0 and (
            self._checkpoint is None or self._checkpoint.done()
        ):
            self._checkpoint = self._db.submit(loop, _checkpoint)
            self._checkpoint.add_done_callback(_retrieve)

    def _on_thread(self, loop: asyncio.AbstractEventLoop, group: list[Line]) -> None:
        """Commit ``group`` on the store's thread (which waits for the write lock), failing
        its waiters with Unavailable if that takes longer than ``timeout_s``."""

        def expired() -> None:
            _settle(group, lambda: unavailable("sqlite", TimeoutError(), self._timeout_s))

        timer = loop.call_later(self._timeout_s, expired)

        def written(result: asyncio.Future[None]) -> None:
            timer.cancel()
            if result.cancelled():
                _settle(group, lambda: Unavailable("state store sqlite: the write was cancelled"))
                return
            error = result.exception()
            failed = None if error is None else functools.partial(unavailable, "sqlite", error)
            _settle(group, failed)

        self._db.submit(loop, lambda conn: self._commit(conn, group)).add_done_callback(written)

    def _commit(self, conn: sqlite3.Connection, group: list[Line]) -> None:
        with transaction(conn):
            for record, audit, _ in group:
                self._insert(conn, record, audit)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            use_wal(conn, 0)  # the store made the file WAL at start: only read here
            for pragma in (
                "PRAGMA synchronous=NORMAL",
                "PRAGMA busy_timeout=0",
                "PRAGMA wal_autocheckpoint=0",
            ):
                conn.execute(pragma)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Commit what is waiting, then close the loop's connection (further writes raise
        Unavailable). A group on the store's thread ends before the thread closes."""
        if self._waiting:
            self._flush(asyncio.get_running_loop())
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _settle(group: list[Line], error: Callable[[], SwitchboardError] | None) -> None:
    """Tell each waiter its line was committed, or raise a fresh ``error()`` in it."""
    for _, _, committed in group:
        if committed.done():  # its caller left, or the thread's group timed out
            continue
        if error is None:
            committed.set_result(None)
        else:
            committed.set_exception(error())


def _checkpoint(conn: sqlite3.Connection) -> None:
    # RESTART holds the write lock while it copies the WAL into the file (the loop's commits
    # meanwhile go to this thread, behind it), so the next commit starts the WAL over; a
    # passive checkpoint racing the loop's commits would never catch up, and the WAL would
    # grow without end.
    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()


def _retrieve(done: asyncio.Future[None]) -> None:
    """A failed checkpoint is harmless (the next one catches up): only retrieved."""
    if not done.cancelled():
        done.exception()
