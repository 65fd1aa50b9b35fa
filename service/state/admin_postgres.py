"""The AdminService's store on PostgreSQL (see ``admin_store``), through the pool of
:class:`~service.state.postgres.PostgresDurable`. Every replica reads and writes the same rows;
a key write holds the ``api_key_revision`` row lock until it commits, so revisions become
visible in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
from service.state.postgres import PostgresDurable
from service.state.records import UsageRow

_NEXT_REVISION = (
    "UPDATE api_key_revision SET revision = revision + 1 WHERE one = 1 RETURNING revision"
)
_INSERT = (
    f"INSERT INTO api_keys ({KEY_COLUMNS}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join(f'${i}' for i in range(1, 12))})"
)


class PostgresAdmin:
    """See the module docstring."""

    def __init__(self, durable: PostgresDurable) -> None:
        self._durable = durable

    async def _fetch(self, query: str, *args: object) -> list[Any]:
        return await self._durable.fetch(query, *args)

    async def insert_key(self, record: ApiKey, *, expire: tuple[str, float] | None = None) -> int:
        async with self._durable.transaction() as conn:
            revision = int(await conn.fetchval(_NEXT_REVISION))
            await conn.execute(_INSERT, *key_values(record, revision))
            if expire is not None:
                await conn.execute(
                    "UPDATE api_keys SET expires_at = LEAST(coalesce(expires_at, $1), $1), "
                    "revision = $2 WHERE id = $3",
                    expire[1],
                    revision,
                    expire[0],
                )
        return revision

    async def revoke_key(self, key_id: str, at: float) -> ApiKey | None:
        async with self._durable.transaction() as conn:
            revoked = await conn.fetchval(
                "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1 FOR UPDATE", key_id
            )
            if revoked is False:
                await conn.execute(
                    "UPDATE api_keys SET revoked_at = $1, revision = $2 WHERE id = $3",
                    at,
                    int(await conn.fetchval(_NEXT_REVISION)),
                    key_id,
                )
            row = await conn.fetchrow(
                f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1",  # noqa: S608
                key_id,
            )
        return None if row is None else key_of(row)

    async def get_key(self, key_id: str) -> ApiKey | None:
        rows = await self._fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1",  # noqa: S608
            key_id,
        )
        return key_of(rows[0]) if rows else None

    async def list_keys(
        self, tenant: str | None, after: str, limit: int, *, include_revoked: bool
    ) -> list[ApiKey]:
        rows = await self._fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id > $1 "  # noqa: S608
            "AND ($2::text IS NULL OR tenant = $2) AND ($3 OR revoked_at IS NULL) "
            "ORDER BY id LIMIT $4",
            after,
            tenant,
            include_revoked,
            limit,
        )
        return [key_of(row) for row in rows]

    async def keys_since(self, revision: int) -> tuple[int, list[ApiKey]]:
        rows = await self._fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revision > $1 ORDER BY revision",  # noqa: S608
            revision,
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
        query = totals_query("postgres", start, end, group_by, tenant, bucket_s)
        return query.read(await self._fetch(query.sql, *query.args))

    async def recent_calls(self, limit: int, tenant: str | None) -> list[RecentCall]:
        rows = await self._fetch(
            f"SELECT {CALL_COLUMNS} FROM usage_ledger "  # noqa: S608
            "WHERE ($1::text IS NULL OR tenant = $1) ORDER BY at DESC, id DESC LIMIT $2",
            tenant,
            limit,
        )
        return [call_of(row) for row in rows]
