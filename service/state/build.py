"""Builds the stores a config asks for: embedded (SQLite + memory) or shared (PostgreSQL +
Redis)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from service.state.memory import MemoryFast
from service.state.postgres import PostgresDurable
from service.state.redis import RedisFast
from service.state.sqlite import SqliteDurable
from service.state.stores import Stores

if TYPE_CHECKING:
    from service.config import Snapshot


def build_stores(snapshot: Snapshot) -> Stores:
    """The stores of ``snapshot.state``. Nothing connects until first used (or migrated)."""
    state = snapshot.state
    if state.backend == "embedded":
        # Relative to the config file, like every other path in it.
        data_dir = Path(snapshot.source).parent / state.data_dir
        return Stores(
            backend="embedded",
            durable=SqliteDurable(data_dir, timeout_s=state.timeout_s),
            fast=MemoryFast(max_entries=state.memory_max_entries),
        )
    assert snapshot.postgres_dsn is not None  # resolved by load() for the shared backend
    return Stores(
        backend="shared",
        durable=PostgresDurable(
            snapshot.postgres_dsn,
            schema=state.postgres_schema,
            timeout_s=state.timeout_s,
            pool_size=state.pool_size,
        ),
        fast=RedisFast(
            state.redis_url,
            prefix=state.redis_prefix,
            timeout_s=state.timeout_s,
            pool_size=state.pool_size,
        ),
    )
