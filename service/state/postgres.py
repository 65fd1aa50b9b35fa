"""Durable records on PostgreSQL (asyncpg, pooled): sessions, usage ledger, audit log.

For the shared mode: every replica reads and writes the same rows. An append upserts the
session row (its row lock orders concurrent appends) and inserts the turn in one transaction.
Tables live in ``schema`` (created if missing); migrations run under an advisory lock so that
replicas starting together migrate once. Every call is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import asyncpg

from service.secrets import Secret
from service.state import schema as ddl
from service.state.guard import guarded
from service.state.ledger_query import totals_query
from service.state.records import (
    AuditEntry,
    Claim,
    SessionInfo,
    Turn,
    UsageRecord,
    UsageTotal,
)
from service.state.stores import session_of_another_agent

_FAILURES: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
_MIGRATION_LOCK = 0x5B_0001
SWEEP_EVERY = 1024  # idempotency claims between deletions of expired records
_SESSION_COLUMNS = "session_id, agent, created_at, updated_at, turn_count"


class PostgresDurable:
    """See the module docstring. The pool is opened on first use."""

    def __init__(
        self, dsn: Secret, *, schema: str = "public", timeout_s: float, pool_size: int = 10
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._timeout_s = timeout_s
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._claims = 0

    def _guard(self) -> Any:
        return guarded("postgres", self._timeout_s, _FAILURES)

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn.reveal(),
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=self._timeout_s,
                    command_timeout=self._timeout_s,
                    server_settings={"search_path": self._schema},
                )
            return self._pool

    async def migrate(self) -> None:
        async with self.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.execute(ddl.VERSION_TABLE)
            current = await conn.fetchval("SELECT max(version) FROM schema_version") or 0
            for version in range(current + 1, len(ddl.MIGRATIONS) + 1):
                for statement in ddl.statements("postgres", version):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version VALUES ($1)", version)

    async def ping(self) -> None:
        async with self._guard():
            pool = await self._get_pool()
            await pool.fetchval("SELECT 1")

    async def aclose(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(self._timeout_s):
                    await pool.close()
            except TimeoutError:
                pool.terminate()

    async def fetch(self, query: str, *args: object) -> list[Any]:
        """The rows of ``query`` (bounded; Unavailable when the store fails)."""
        return await self._fetch(query, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction, the whole block bounded by ``timeout_s``."""
        async with self._guard():
            pool = await self._get_pool()
            async with pool.acquire() as conn, conn.transaction():
                yield conn

    async def _fetch(self, query: str, *args: object) -> list[Any]:
        async with self._guard():
            pool = await self._get_pool()
            return list(await pool.fetch(query, *args))

    async def _execute(self, query: str, *args: object) -> str:
        async with self._guard():
            pool = await self._get_pool()
            return str(await pool.execute(query, *args))

    # sessions

    async def turns(self, tenant: str, session_id: str, limit: int) -> list[Turn]:
        rows = await self._fetch(
            "SELECT seq, agent, messages, created_at FROM session_turns "
            "WHERE tenant = $1 AND session_id = $2 ORDER BY seq DESC LIMIT $3",
            tenant,
            session_id,
            limit,
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
        async with self.transaction() as conn:
            seq = await conn.fetchval(
                "INSERT INTO sessions (tenant, session_id, agent, created_at, updated_at, "
                "turn_count) VALUES ($1, $2, $3, $4, $4, 1) "
                "ON CONFLICT (tenant, session_id) DO UPDATE SET "
                "turn_count = sessions.turn_count + 1, updated_at = EXCLUDED.updated_at "
                "WHERE sessions.agent = EXCLUDED.agent RETURNING turn_count",
                tenant,
                session_id,
                agent,
                at,
            )
            if seq is None:
                raise session_of_another_agent(session_id)
            await conn.execute(
                "INSERT INTO session_turns (tenant, session_id, seq, agent, messages, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                tenant,
                session_id,
                seq,
                agent,
                messages_json,
                at,
            )
            if usage is not None:
                sql, args = _usage_statement(usage, audit)
                await conn.execute(sql, *args)

    async def get(self, tenant: str, session_id: str) -> SessionInfo | None:
        rows = await self._fetch(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE tenant = $1 AND session_id = $2",  # noqa: S608
            tenant,
            session_id,
        )
        return SessionInfo(*rows[0]) if rows else None

    async def list_sessions(
        self, tenant: str, after: str, limit: int, agents: Collection[str] | None = None
    ) -> list[SessionInfo]:
        rows = await self._fetch(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE tenant = $1 "  # noqa: S608
            'AND session_id COLLATE "C" > $2 AND ($4::text[] IS NULL OR agent = ANY($4)) '
            'ORDER BY session_id COLLATE "C" LIMIT $3',
            tenant,
            after,
            limit,
            None if agents is None else sorted(agents),
        )
        return [SessionInfo(*row) for row in rows]

    async def delete(self, tenant: str, session_id: str) -> bool:
        async with self.transaction() as conn:
            await conn.execute(
                "DELETE FROM session_turns WHERE tenant = $1 AND session_id = $2",
                tenant,
                session_id,
            )
            status = await conn.execute(
                "DELETE FROM sessions WHERE tenant = $1 AND session_id = $2",
                tenant,
                session_id,
            )
        return str(status) != "DELETE 0"

    # usage ledger

    async def record_usage(self, record: UsageRecord, audit: AuditEntry | None = None) -> None:
        sql, args = _usage_statement(record, audit)
        await self._execute(sql, *args)

    async def totals(
        self, tenant: str, start: float, end: float, group_by: Sequence[str]
    ) -> list[UsageTotal]:
        query = totals_query("postgres", start, end, group_by, tenant)
        return [row.totals for row in query.read(await self._fetch(query.sql, *query.args))]

    # audit

    async def audit(self, e: AuditEntry) -> None:
        await self._execute(_audit_sql(1), *_audit_args(e))

    async def recent_audit(self, tenant: str, limit: int) -> list[AuditEntry]:
        rows = await self._fetch(
            f"{ddl.AUDIT_SELECT} WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
            tenant,
            limit,
        )
        return [AuditEntry(*row) for row in rows]

    # idempotency records (durable: a Redis loss forgets none)

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        """The database's clock decides expiry, so every replica agrees. Every
        ``SWEEP_EVERY`` claims, expired records are deleted."""
        self._claims += 1
        if self._claims % SWEEP_EVERY == 0:
            await self.sweep_idempotency()
        async with self._guard():
            pool = await self._get_pool()
            for _ in range(3):
                taken = await pool.fetchval(
                    "INSERT INTO idempotency (key, fingerprint, state, result, expires_at) "
                    "VALUES ($1, $2, 'pending', NULL, extract(epoch FROM clock_timestamp()) + $3) "
                    "ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                    "state = 'pending', result = NULL, expires_at = EXCLUDED.expires_at "
                    "WHERE idempotency.expires_at <= extract(epoch FROM clock_timestamp()) "
                    "RETURNING true",
                    key,
                    fingerprint,
                    lease_s,
                )
                if taken:
                    return Claim("new", fingerprint)
                row = await pool.fetchrow(
                    "SELECT state, fingerprint, result FROM idempotency WHERE key = $1", key
                )
                if row is not None:
                    result = row["result"]
                    return Claim(row["state"], row["fingerprint"], result and bytes(result))
        return Claim("pending", "")  # taken and freed three times over: the caller waits

    async def complete(self, key: str, fingerprint: str, result: bytes, ttl_s: float) -> None:
        await self._execute(
            "INSERT INTO idempotency (key, fingerprint, state, result, expires_at) "
            "VALUES ($1, $2, 'done', $3, extract(epoch FROM clock_timestamp()) + $4) "
            "ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "state = 'done', result = EXCLUDED.result, expires_at = EXCLUDED.expires_at",
            key,
            fingerprint,
            result,
            ttl_s,
        )

    async def abandon(self, key: str) -> None:
        await self._execute("DELETE FROM idempotency WHERE key = $1 AND state = 'pending'", key)

    async def sweep_idempotency(self) -> None:
        """Delete expired idempotency records."""
        await self._execute(
            "DELETE FROM idempotency WHERE expires_at <= extract(epoch FROM clock_timestamp())"
        )


_AUDIT_INSERT = (
    "INSERT INTO audit_log "
    "(at, tenant, key_id, request_id, action, resource, outcome, entry_id, detail) "
    "VALUES (${n}, ${n1}, ${n2}, ${n3}, ${n4}, ${n5}, ${n6}, ${n7}, ${n8}) "
    "ON CONFLICT (entry_id) DO NOTHING"
)


def _audit_args(e: AuditEntry) -> list[object]:
    return [e.at, e.tenant, e.key_id, e.request_id, e.action, e.resource, e.outcome,
            e.entry_id or None, e.detail]  # fmt: skip


def _audit_sql(first: int) -> str:
    """The audit insert with its parameters numbered from ``first``."""
    names = {"n": first, **{f"n{i}": first + i for i in range(1, 9)}}
    return _AUDIT_INSERT.format(**names)


_USAGE_INSERT = (
    f"INSERT INTO usage_ledger ({', '.join(ddl.LEDGER_COLUMNS)}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(ddl.LEDGER_COLUMNS) + 1))}) "
    "ON CONFLICT (line_id) DO NOTHING"
)


def _usage_statement(r: UsageRecord, audit: AuditEntry | None) -> tuple[str, list[object]]:
    """One statement (one round trip) writing the ledger line and, if given, the audit entry.
    A line (or entry) whose id is already there is left alone: a replay lands once."""
    args: list[object] = list(ddl.ledger_values(r))
    if audit is None:
        return _USAGE_INSERT, args
    sql = f"WITH ledger AS ({_USAGE_INSERT}) {_audit_sql(len(args) + 1)}"
    return sql, [*args, *_audit_args(audit)]
