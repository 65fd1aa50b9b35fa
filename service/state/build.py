"""Builds the stores a config asks for: embedded (SQLite + memory) or shared (PostgreSQL +
Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.approvals.postgres import PostgresApprovals
from service.approvals.sqlite import SqliteApprovals
from service.idempotency.tiered import TieredIdempotency
from service.runs.postgres import PostgresRuns
from service.runs.sqlite import SqliteRuns
from service.state.admin_postgres import PostgresAdmin
from service.state.admin_sqlite import SqliteAdmin
from service.state.memory import MemoryFast
from service.state.postgres import PostgresDurable
from service.state.redis import RedisFast
from service.state.sqlite import SqliteDurable
from service.state.stores import Stores

if TYPE_CHECKING:
    from service.config import Snapshot


def data_dir(snapshot: Snapshot) -> Path:
    """``state.data_dir``, relative to the config file like every other path in it."""
    return Path(snapshot.source).parent / snapshot.state.data_dir


def build_stores(snapshot: Snapshot) -> Stores:
    """The stores of ``snapshot.state``. Nothing connects until first used (or migrated)."""
    state = snapshot.state
    if state.backend == "embedded":
        sqlite = SqliteDurable(data_dir(snapshot), timeout_s=state.timeout_s)
        return Stores(
            backend="embedded",
            durable=sqlite,
            fast=MemoryFast(max_entries=state.memory_max_entries),
            # In the SQLite file, so a restart forgets no request id.
            idempotency=sqlite,
            admin=SqliteAdmin(sqlite.file),
            approvals=SqliteApprovals(sqlite.file),
            runs=SqliteRuns(sqlite.file),
        )
    assert snapshot.postgres_dsn is not None  # resolved by load() for the shared backend
    postgres = PostgresDurable(
        snapshot.postgres_dsn,
        schema=state.postgres_schema,
        timeout_s=state.timeout_s,
        pool_size=state.pool_size,
    )
    redis = RedisFast(
        state.redis_url,
        prefix=state.redis_prefix,
        timeout_s=state.timeout_s,
        pool_size=state.pool_size,
    )
    return Stores(
        backend="shared",
        durable=postgres,
        fast=redis,
        # PostgreSQL decides, Redis serves recorded answers fast: a Redis loss forgets none.
        idempotency=TieredIdempotency(postgres, redis),
        admin=PostgresAdmin(postgres),
        approvals=PostgresApprovals(postgres),
        runs=PostgresRuns(postgres),
    )
