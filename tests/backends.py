"""Real backends for tests: a unique PostgreSQL schema and a unique Redis key prefix per test,
both removed afterwards. The servers run on every machine here (see .ci/run)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema name; the schema (if created) is dropped with everything in it."""
    schema = unique("sb_test")
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards."""
    prefix = unique("sbtest")
    try:
        yield prefix
    finally:
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


def shared_state_yaml(schema: str, prefix: str) -> str:
    """A ``state:`` section for the shared backend on the test servers."""
    return (
        "state:\n"
        "  backend: shared\n"
        f"  postgres_dsn: {POSTGRES_DSN}\n"
        f"  postgres_schema: {schema}\n"
        f"  redis_url: {REDIS_URL}\n"
        f"  redis_prefix: {prefix}\n"
    )


def embedded_state_yaml(data_dir: str) -> str:
    return f"state:\n  backend: embedded\n  data_dir: {data_dir}\n"
