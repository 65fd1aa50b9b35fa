"""Servers a test owns and may break: a redis-server of its own (killed and restarted at will)
and a TCP proxy in front of the shared PostgreSQL (closed to make it refuse connections).

The shared Redis (6379) and PostgreSQL (5432) are never touched: other sessions use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import redis

from tests.backends import POSTGRES_DSN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A non-persistent redis-server on a free loopback port (as many caches run)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self._workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.exceptions.ConnectionError):
                client = redis.Redis(port=self.port, socket_timeout=1)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            assert self._process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: everything it held is gone."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def flush(self) -> None:
        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()


@contextlib.contextmanager
def own_redis(workdir: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


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
