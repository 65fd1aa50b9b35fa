"""What the AdminService keeps and reads in the durable store: API keys, and reports over the
usage ledger across tenants. One interface, an embedded (SQLite) and a shared (PostgreSQL)
implementation (``admin_sqlite``, ``admin_postgres``) that pass the same tests. What they
share is here: the statements, written once, the row mapping, and the reads
(:class:`SqlAdmin`); each keeps its own transactions and the SQL only its dialect speaks.

Every method is bounded by the store's ``timeout_s`` and raises ``Unavailable`` when the store
is down, as every store does.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from service.auth.keys import ApiKey
from service.state.ledger_query import Dialect, totals_query
from service.state.records import UsageRow

KEY_COLUMNS = (
    "id, tenant, sha256, agents, scopes, note, created_at, expires_at, revoked_at, "
    "rotated_from, revision"
)
CALL_COLUMNS = (
    "at, tenant, key_id, request_id, agent, target, model, status, latency_ms, "
    "input_tokens, output_tokens, cost_nanos, cache_hit"
)

# The statements both dialects run, with PostgreSQL's numbered placeholders ($1); the SQLite
# store turns them into SQLite's (?1). A bare parameter tested for NULL is cast, so that
# PostgreSQL knows its type.
NEXT_REVISION = (
    "UPDATE api_key_revision SET revision = revision + 1 WHERE one = 1 RETURNING revision"
)
INSERT_KEY = (
    f"INSERT INTO api_keys ({KEY_COLUMNS}) "  # noqa: S608 (constants)
    f"VALUES ({', '.join(f'${i}' for i in range(1, 12))})"
)
REVOKE_KEY = "UPDATE api_keys SET revoked_at = $1, revision = $2 WHERE id = $3"
SELECT_KEY = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"  # noqa: S608 (constants)
_LIST_KEYS = (
    f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id > $1 "  # noqa: S608 (constants)
    "AND (CAST($2 AS TEXT) IS NULL OR tenant = $2) AND ($3 OR revoked_at IS NULL) "
    "ORDER BY id LIMIT $4"
)
_KEYS_SINCE = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE revision > $1 ORDER BY revision"  # noqa: S608
_RECENT_CALLS = (
    f"SELECT {CALL_COLUMNS} FROM usage_ledger "  # noqa: S608 (constants)
    "WHERE (CAST($1 AS TEXT) IS NULL OR tenant = $1) ORDER BY at DESC, id DESC LIMIT $2"
)


@dataclass(frozen=True, slots=True)
class RecentCall:
    """One ledger line: a call's metadata (never its prompt or answer)."""

    at: float
    tenant: str
    key_id: str
    request_id: str
    agent: str
    target: str
    model: str
    status: str
    latency_ms: int
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    cache_hit: bool


class AdminStore(Protocol):
    async def insert_key(self, record: ApiKey, *, expire: tuple[str, float] | None = None) -> int:
        """Add ``record`` (its id is new); with ``expire=(id, at)``, in the same transaction
        set that key's expiry to ``at`` unless it expires sooner (a rotation). Returns the
        revision written."""
        ...

    async def revoke_key(self, key_id: str, at: float) -> ApiKey | None:
        """Mark the key revoked at ``at`` unless it already is; the key as stored now, or
        None when there is no such key."""
        ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def list_keys(
        self, tenant: str | None, after: str, limit: int, *, include_revoked: bool
    ) -> list[ApiKey]:
        """Keys with ids greater than ``after``, ordered by id; of one tenant if given."""
        ...

    async def keys_since(self, revision: int) -> tuple[int, list[ApiKey]]:
        """Keys written after ``revision``, and the revision they bring the reader to."""
        ...

    async def usage_report(
        self,
        start: float,
        end: float,
        group_by: Sequence[str],
        bucket_s: float | None,
        tenant: str | None,
    ) -> list[UsageRow]:
        """Ledger totals with ``start <= at < end`` across tenants (or of one), grouped by
        ``group_by`` (of ``ledger_query.DIMENSIONS``) and, with ``bucket_s``, by time buckets
        aligned to multiples of it since the epoch; ordered by bucket, then the dimensions
        (:func:`~service.state.ledger_query.totals_query`)."""
        ...

    async def recent_calls(self, limit: int, tenant: str | None) -> list[RecentCall]:
        """The newest ledger lines, newest first."""
        ...


def key_values(record: ApiKey, revision: int) -> tuple[object, ...]:
    """``record``'s column values in :data:`KEY_COLUMNS` order."""
    agents = None if record.agents is None else json.dumps(sorted(record.agents))
    return (
        record.id, record.tenant, record.sha256, agents, json.dumps(sorted(record.scopes)),
        record.note, record.created_at, record.expires_at, record.revoked_at,
        record.rotated_from, revision,
    )  # fmt: skip


def key_of(row: Sequence[Any]) -> ApiKey:
    """The record of an ``api_keys`` row selected as :data:`KEY_COLUMNS`."""
    agents = None if row[3] is None else frozenset(json.loads(row[3]))
    return ApiKey(
        id=row[0],
        tenant=row[1],
        sha256=row[2],
        agents=agents,
        scopes=frozenset(json.loads(row[4])),
        note=row[5],
        created_at=float(row[6]),
        expires_at=None if row[7] is None else float(row[7]),
        revoked_at=None if row[8] is None else float(row[8]),
        source="store",
        rotated_from=row[9],
    )


def call_of(row: Sequence[Any]) -> RecentCall:
    return RecentCall(
        float(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], row[7],
        int(row[8]), int(row[9]), int(row[10]), int(row[11]), bool(row[12]),
    )  # fmt: skip


class SqlAdmin(abc.ABC):
    """An :class:`AdminStore`'s reads, the same SQL in both dialects. A subclass names its
    ``dialect``, runs a statement (:meth:`_fetch`) and writes keys in its own transactions
    (``insert_key``, ``revoke_key``)."""

    dialect: ClassVar[Dialect]

    @abc.abstractmethod
    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        """The rows of ``sql`` (``$n`` placeholders) with ``args``, bounded by the store's
        ``timeout_s``; raises Unavailable when the store fails."""

    async def get_key(self, key_id: str) -> ApiKey | None:
        rows = await self._fetch(SELECT_KEY, key_id)
        return key_of(rows[0]) if rows else None

    async def list_keys(
        self, tenant: str | None, after: str, limit: int, *, include_revoked: bool
    ) -> list[ApiKey]:
        rows = await self._fetch(_LIST_KEYS, after, tenant, include_revoked, limit)
        return [key_of(row) for row in rows]

    async def keys_since(self, revision: int) -> tuple[int, list[ApiKey]]:
        rows = await self._fetch(_KEYS_SINCE, revision)
        return max([revision, *(int(row[10]) for row in rows)]), [key_of(row) for row in rows]

    async def usage_report(
        self,
        start: float,
        end: float,
        group_by: Sequence[str],
        bucket_s: float | None,
        tenant: str | None,
    ) -> list[UsageRow]:
        query = totals_query(self.dialect, start, end, group_by, tenant, bucket_s)
        return query.read(await self._fetch(query.sql, *query.args))

    async def recent_calls(self, limit: int, tenant: str | None) -> list[RecentCall]:
        rows = await self._fetch(_RECENT_CALLS, tenant, limit)
        return [call_of(row) for row in rows]
