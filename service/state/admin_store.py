"""What the AdminService keeps and reads in the durable store: API keys, and reports over the
usage ledger across tenants. One interface, an embedded (SQLite) and a shared (PostgreSQL)
implementation (``admin_sqlite``, ``admin_postgres``) that pass the same tests.

Every method is bounded by the store's ``timeout_s`` and raises ``Unavailable`` when the store
is down, as every store does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.auth.keys import ApiKey
from service.state.records import UsageRow

KEY_COLUMNS = (
    "id, tenant, sha256, agents, scopes, note, created_at, expires_at, revoked_at, "
    "rotated_from, revision"
)
CALL_COLUMNS = (
    "at, tenant, key_id, request_id, agent, target, model, status, latency_ms, "
    "input_tokens, output_tokens, cost_nanos, cache_hit"
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
