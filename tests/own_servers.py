"""Servers a test owns and may break: a redis-server of its own (killed and restarted at will,
from :mod:`tests.own_redis`) and a TCP proxy in front of the shared PostgreSQL (closed to make
it refuse connections).

The shared Redis (6379) and PostgreSQL (5432) are never touched: other sessions use them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tests.backends import POSTGRES_DSN
from tests.own_redis import OwnRedis, free_port, own_redis

__all__ = ["OwnRedis", "PostgresProxy", "own_redis", "postgres_proxy"]


class PostgresProxy:
    """A TCP proxy to the shared PostgreSQL. ``block()`` drops every connection and refuses
    new ones (as a PostgreSQL that went away); ``unblock()`` lets them through again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dsn = POSTGRES_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def unblock(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def block(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        if self._pipes:
            await asyncio.wait(list(self._pipes))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._writers.add(writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", 5432)
            self._writers.add(upstream_writer)
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(reader, upstream_writer))
                group.create_task(_pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError, ExceptionGroup):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._pipes.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()


@contextlib.asynccontextmanager
async def postgres_proxy() -> AsyncIterator[PostgresProxy]:
    proxy = PostgresProxy()
    await proxy.unblock()
    try:
        yield proxy
    finally:
        await proxy.block()
