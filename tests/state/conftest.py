"""Each store fixture runs every test once per backend: embedded and shared."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.secrets import Secret
from service.state.memory import MemoryFast
from service.state.postgres import PostgresDurable
from service.state.redis import RedisFast
from service.state.sqlite import SqliteDurable
from service.state.stores import Durable, Fast
from tests.backends import POSTGRES_DSN, REDIS_URL, postgres_schema, redis_prefix


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Durable]:
    if request.param == "sqlite":
        store: Durable = SqliteDurable(tmp_path, timeout_s=5)
        await store.migrate()
        try:
            yield store
        finally:
            await store.aclose()
        return
    async with postgres_schema() as schema:
        store = PostgresDurable(Secret(POSTGRES_DSN), schema=schema, timeout_s=5)
        await store.migrate()
        try:
            yield store
        finally:
            await store.aclose()


@pytest.fixture(params=["memory", "redis"])
async def fast(request: pytest.FixtureRequest) -> AsyncIterator[Fast]:
    if request.param == "memory":
        yield MemoryFast()
        return
    async with redis_prefix() as prefix:
        store = RedisFast(REDIS_URL, prefix=prefix, timeout_s=5)
        try:
            yield store
        finally:
            await store.aclose()
