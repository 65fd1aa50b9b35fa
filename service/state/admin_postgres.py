"""The AdminService's store on PostgreSQL (see ``admin_store``), through the pool of
:class:`~service.state.postgres.PostgresDurable`. Every replica reads and writes the same rows;
a key write holds the ``api_key_revision`` row lock until it commits, so revisions become
visible in order."""

from __future__ import annotations

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
from service.state.postgres import PostgresDurable

_EXPIRE = (
    "UPDATE api_keys SET expires_at = LEAST(coalesce(expires_at, $1), $1), revision = $2 "
    "WHERE id = $3"
)


class PostgresAdmin(SqlAdmin):
    """See the module docstring."""

    dialect = "postgres"

    def __init__(self, durable: PostgresDurable) -> None:
        self._durable = durable

    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        return await self._durable.fetch(sql, *args)

    async def insert_key(self, record: ApiKey, *, expire: tuple[str, float] | None = None) -> int:
        async with self._durable.transaction() as conn:
            revision = int(await conn.fetchval(NEXT_REVISION))
            await conn.execute(INSERT_KEY, *key_values(record, revision))
            if expire is not None:
                await conn.execute(_EXPIRE, expire[1], revision, expire[0])
        return revision

    async def revoke_key(self, key_id: str, at: float) -> ApiKey | None:
        async with self._durable.transaction() as conn:
            revoked = await conn.fetchval(  # the row locked until the transaction ends
                "SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1 FOR UPDATE", key_id
            )
            if revoked is False:
                revision = int(await conn.fetchval(NEXT_REVISION))
                await conn.execute(REVOKE_KEY, at, revision, key_id)
            row = await conn.fetchrow(SELECT_KEY, key_id)
        return None if row is None else key_of(row)
