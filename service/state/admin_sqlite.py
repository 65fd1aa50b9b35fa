"""The AdminService's store in the embedded SQLite file (see ``admin_store``): the same file,
connection and thread as :class:`~service.state.sqlite.SqliteDurable`, so its writes are
serialised with every other."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from service.auth.keys import ApiKey
from service.state.admin_store import (
    INSERT_KEY,
    NEXT_REVISION,
    REVOKE_KEY,
    SELECT_KEY,
    SqlAdmin,
    key_of,
    key_values,
)
from service.state.sqlite_file import SqliteFile, transaction


@functools.lru_cache(maxsize=128)
def _numbered(sql: str) -> str:
    """``sql`` with SQLite's numbered placeholders (``?1``) for PostgreSQL's (``$1``)."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


_EXPIRE = (  # SQLite's two-argument min() is PostgreSQL's LEAST()
    "UPDATE api_keys SET expires_at = min(coalesce(expires_at, ?1), ?1), revision = ?2 "
    "WHERE id = ?3"
)


class SqliteAdmin(SqlAdmin):
    """See the module docstring."""

    dialect = "sqlite"

    def __init__(self, db: SqliteFile) -> None:
        self._db = db

    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        return await self._db.run(lambda conn: conn.execute(_numbered(sql), args).fetchall())

    async def insert_key(self, record: ApiKey, *, expire: tuple[str, float] | None = None) -> int:
        def run(conn: sqlite3.Connection) -> int:
            with transaction(conn):
                revision = _next_revision(conn)
                conn.execute(_numbered(INSERT_KEY), key_values(record, revision))
                if expire is not None:
                    conn.execute(_EXPIRE, (expire[1], revision, expire[0]))
            return revision

        return await self._db.run(run)

    async def revoke_key(self, key_id: str, at: float) -> ApiKey | None:
        def run(conn: sqlite3.Connection) -> ApiKey | None:
            with transaction(conn):  # BEGIN IMMEDIATE: no other writer until it ends
                row = conn.execute(
                    "SELECT revoked_at FROM api_keys WHERE id = ?1", (key_id,)
                ).fetchone()
                if row is not None and row[0] is None:
                    conn.execute(_numbered(REVOKE_KEY), (at, _next_revision(conn), key_id))
            row = conn.execute(_numbered(SELECT_KEY), (key_id,)).fetchone()
            return None if row is None else key_of(row)

        return await self._db.run(run)


def _next_revision(conn: sqlite3.Connection) -> int:
    return int(conn.execute(NEXT_REVISION).fetchone()[0])
