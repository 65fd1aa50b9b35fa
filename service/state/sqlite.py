"""Durable records in one SQLite file (WAL mode): sessions, usage ledger, audit log, and
idempotency records.

For the embedded mode. Statements run on one dedicated thread with one connection, so
they are serialised: an append (session upsert + turn insert) is one transaction, and no
turn is lost to a concurrent one. Every call is bounded by ``timeout_s``. Ledger lines are
the exception: they are committed in groups on the event loop through a second connection
while the file is free (:mod:`service.state.sqlite_ledger`); SQLite's write lock serialises
the two connections.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

from service.state import schema
from service.state.ledger_query import totals_query
from service.state.records import (
    AuditEntry,
    Claim,
    SessionInfo,
    Turn,
    UsageRecord,
    UsageTotal,
)
from service.state.sqlite_file import SqliteFile, transaction
from service.state.sqlite_ledger import GroupCommit
from service.state.stores import session_of_another_agent

T = TypeVar("T")
FILE_NAME = "switchboard.sqlite3"
SWEEP_EVERY = 1024  # claims between deletions of expired idempotency records
_SESSION_COLUMNS = "session_id, agent, created_at, updated_at, turn_count"


class SqliteDurable:
    """See the module docstring. ``data_dir`` is created if missing."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: wall time in seconds, for idempotency records' expiry."""
        self.path = Path(data_dir) / FILE_NAME
        self._timeout_s = timeout_s
        self._clock = clock
        self._claims = 0
        self._db = SqliteFile(
            self.path,
            name="sqlite",
            timeout_s=timeout_s,
            synchronous="NORMAL",
            busy_timeout_ms=2000,
        )
        self._run = self._db.run
        self._ledger = GroupCommit(self.path, self._db, _insert_line, timeout_s=timeout_s)

    @property
    def file(self) -> SqliteFile:
        """The file's one connection and thread (the admin store shares them)."""
        return self._db

    async def migrate(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(schema.VERSION_TABLE)
                row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                current = row[0] or 0
                for version in range(current + 1, len(schema.MIGRATIONS) + 1):
                    for statement in schema.statements("sqlite", version):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

        await self._run(run)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        self._ledger.close()
        await self._db.aclose()

    # sessions

    async def turns(self, tenant: str, session_id: str, limit: int) -> list[Turn]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT seq, agent, messages, created_at FROM session_turns "
                "WHERE tenant = ? AND session_id = ? ORDER BY seq DESC LIMIT ?",
                (tenant, session_id, limit),
            ).fetchall()
        )
        return [Turn(*row) for row in reversed(rows)]

    async def append(
        self,
        tenant: str,
        session_id: str,
        agent: str,
        messages_json: str,
        at: float,
        *,
        usage: UsageRecord | None = None,
        audit: AuditEntry | None = None,
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                row = conn.execute(
                    "INSERT INTO sessions (tenant, session_id, agent, created_at, updated_at, "
                    "turn_count) VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (tenant, session_id) "
                    "DO UPDATE SET turn_count = turn_count + 1, updated_at = excluded.updated_at "
                    "WHERE sessions.agent = excluded.agent RETURNING turn_count",
                    (tenant, session_id, agent, at, at),
                ).fetchone()
                if row is None:
                    raise session_of_another_agent(session_id)
                (seq,) = row
                conn.execute(
                    "INSERT INTO session_turns (tenant, session_id, seq, agent, messages, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (tenant, session_id, seq, agent, messages_json, at),
                )
                if usage is not None:
                    _insert_usage(conn, usage)
                if audit is not None:
                    _insert_audit(conn, audit)

        await self._run(run)

    async def get(self, tenant: str, session_id: str) -> SessionInfo | None:
        row = await self._run(
            lambda conn: conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE tenant = ? AND session_id = ?",  # noqa: S608
                (tenant, session_id),
            ).fetchone()
        )
        return None if row is None else SessionInfo(*row)

    async def list_sessions(
        self, tenant: str, after: str, limit: int, agents: Collection[str] | None = None
    ) -> list[SessionInfo]:
        only = sorted(agents) if agents is not None else None
        of_agents = "" if only is None else f"AND agent IN ({', '.join('?' * len(only))}) "
        rows = await self._run(
            lambda conn: conn.execute(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE tenant = ? AND session_id > ? "  # noqa: S608
                f"{of_agents}ORDER BY session_id LIMIT ?",
                (tenant, after, *(only or ()), limit),
            ).fetchall()
        )
        return [SessionInfo(*row) for row in rows]

    async def delete(self, tenant: str, session_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with transaction(conn):
                conn.execute(
                    "DELETE FROM session_turns WHERE tenant = ? AND session_id = ?",
                    (tenant, session_id),
                )
                cursor = conn.execute(
                    "DELETE FROM sessions WHERE tenant = ? AND session_id = ?",
                    (tenant, session_id),
                )
                return cursor.rowcount > 0

        return await self._run(run)

    # usage ledger

    async def record_usage(self, record: UsageRecord, audit: AuditEntry | None = None) -> None:
        """Returns once the line (and audit entry) is committed: lines recorded together
        share one commit, made on the loop when the file is free (:mod:`.sqlite_ledger`)."""
        await self._ledger.write(record, audit)

    async def totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        query = totals_query("sqlite", start, end, group_by, tenant)
        rows = await self._run(lambda conn: conn.execute(query.sql, query.args).fetchall())
        return [row.totals for row in query.read(rows)]

    # audit

    async def audit(self, e: AuditEntry) -> None:
        await self._run(lambda conn: _insert_audit(conn, e))

    # idempotency records (durable: they survive a restart of the process)

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        def run(conn: sqlite3.Connection) -> Claim:
            now = self._clock()
            with transaction(conn):
                row = conn.execute(
                    "SELECT state, fingerprint, result FROM idempotency "
                    "WHERE key = ? AND expires_at > ?",
                    (key, now),
                ).fetchone()
                if row is not None:
                    return Claim(row[0], row[1], None if row[2] is None else bytes(row[2]))
                conn.execute(
                    "INSERT INTO idempotency (key, fingerprint, state, result, expires_at) "
                    "VALUES (?, ?, 'pending', NULL, ?) ON CONFLICT (key) DO UPDATE SET "
                    "fingerprint = excluded.fingerprint, state = 'pending', result = NULL, "
                    "expires_at = excluded.expires_at",
                    (key, fingerprint, now + lease_s),
                )
                self._claims += 1
                if self._claims % SWEEP_EVERY == 0:
                    conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            return Claim("new", fingerprint)

        return await self._run(run)

    async def complete(self, key: str, fingerprint: str, result: bytes, ttl_s: float) -> None:
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO idempotency (key, fingerprint, state, result, expires_at) "
                "VALUES (?, ?, 'done', ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "fingerprint = excluded.fingerprint, state = 'done', result = excluded.result, "
                "expires_at = excluded.expires_at",
                (key, fingerprint, result, self._clock() + ttl_s),
            )
        )

    async def abandon(self, key: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "DELETE FROM idempotency WHERE key = ? AND state = 'pending'", (key,)
            )
        )

    async def recent_audit(self, tenant: str, limit: int) -> list[AuditEntry]:
        rows = await self._run(
            lambda conn: conn.execute(
                f"{schema.AUDIT_SELECT} WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                (tenant, limit),
            ).fetchall()
        )
        return [AuditEntry(*row) for row in rows]


_USAGE_INSERT = (
    f"INSERT INTO usage_ledger ({', '.join(schema.LEDGER_COLUMNS)}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join('?' * len(schema.LEDGER_COLUMNS))}) ON CONFLICT (line_id) DO NOTHING"
)


def _insert_usage(conn: sqlite3.Connection, r: UsageRecord) -> None:
    """Insert the line; one whose ``line_id`` is already there is left alone (a replay)."""
    conn.execute(_USAGE_INSERT, schema.ledger_values(r))


def _insert_line(conn: sqlite3.Connection, r: UsageRecord, e: AuditEntry | None) -> None:
    _insert_usage(conn, r)
    if e is not None:
        _insert_audit(conn, e)


def _insert_audit(conn: sqlite3.Connection, e: AuditEntry) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, tenant, key_id, request_id, action, resource, outcome, "
        "entry_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
        (e.at, e.tenant, e.key_id, e.request_id, e.action, e.resource, e.outcome,
         e.entry_id or None, e.detail),
    )  # fmt: skip
