"""The AdminService's store in the embedded SQLite file (see ``admin_store``): the same file,
connection and thread as :class:`~service.state.sqlite.SqliteDurable`, so its writes are
serialised with every other."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from service.auth.keys import ApiKey
from service.state.admin_store import (
    CALL_COLUMNS,
    KEY_COLUMNS,
    RecentCall,
    call_of,
    key_of,
    key_values,
)
from service.state.ledger_query import totals_query
from service.state.records import UsageRow
from service.state.sqlite_file import SqliteFile, transaction

_INSERT = f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ({', '.join('?' * 11)})"  # noqa: S608


def _next_revision(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "UPDATE api_key_revision SET revision = revision + 1 WHERE one = 1 RETURNING revision"
    ).fetchone()
    return int(row[0])


class SqliteAdmin:
    """See the module docstring."""

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    async def insert_key(self, record: ApiKey, *, expire: tuple[str, float] | None = None) -> int:
        def run(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                revision = _next_revision(conn)
                conn.execute(_INSERT, key_values(record, revision))
                if expire is not None:
                    conn.execute(
                        "UPDATE api_keys SET expires_at = min(coalesce(expires_at, ?), ?), "
                        "revision = ? WHERE id = ?",
                        (expire[1], expire[1], revision, expire[0]),
                    )
            return revision

        return await self._db.run(run)

    async def revoke_key(self, key_id: str, at: float) -> ApiKey | None:
        def run(conn: sqlite3.Connection) -> ApiKey | None:
            with transaction(conn):
                row = conn.execute(
                    "SELECT revoked_at FROM api_keys WHERE id = ?", (key_id,)
                ).fetchone()
                if row is not None and row[0] is None:
                    conn.execute(
                        "UPDATE api_keys SET revoked_at = ?, revision = ? WHERE id = ?",
                        (at, _next_revision(conn), key_id),
                    )
            return _get(conn, key_id)

        return await self._db.run(run)

    async def get_key(self, key_id: str) -> ApiKey | None:
        return await self._db.run(lambda conn: _get(conn, key_id))

    async def list_keys(
        self, tenant: str | None, after: str, limit: int, *, include_revoked: bool
    ) -> list[ApiKey]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id > ? "  # noqa: S608
                "AND (? IS NULL OR tenant = ?) AND (? OR revoked_at IS NULL) "
                "ORDER BY id LIMIT ?",
                (after, tenant, tenant, include_revoked, limit),
            ).fetchall()
        )
        return [key_of(row) for row in rows]

    async def keys_since(self, revision: int) -> tuple[int, list[ApiKey]]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revision > ? ORDER BY revision",  # noqa: S608
                (revision,),
            ).fetchall()
        )
        return max([revision, *(int(row[10]) for row in rows)]), [key_of(row) for row in rows]

    async def usage_report(
        self,
        start: float,
        end: float,
        group_by: Sequence[str],
        bucket_s: float | None,
        tenant: str | None,
    ) -> list[UsageRow]:
        query = totals_query("sqlite", start, end, group_by, tenant, bucket_s)
        rows = await self._db.run(lambda conn: conn.execute(query.sql, query.args).fetchall())
        return query.read(rows)

    async def recent_calls(self, limit: int, tenant: str | None) -> list[RecentCall]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                f"SELECT {CALL_COLUMNS} FROM usage_ledger "  # noqa: S608
                "WHERE (? IS NULL OR tenant = ?) ORDER BY at DESC, id DESC LIMIT ?",
                (tenant, tenant, limit),
            ).fetchall()
        )
        return [call_of(row) for row in rows]


def _get(conn: sqlite3.Connection, key_id: str) -> ApiKey | None:
    row = conn.execute(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?",  # noqa: S608
        (key_id,),
    ).fetchone()
    return None if row is None else key_of(row)
