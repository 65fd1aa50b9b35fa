"""A small HTTP/1.1 server on asyncio, the base of the fake upstreams.

Why not aiohttp: the fakes must misbehave at the byte level — drop a connection in the
middle of a chunked body, end a body cleanly but early, hang before the status line — and
must see each connection to prove the client pools them. A raw ``asyncio.start_server``
gives exact control of every byte in ~200 lines with no new dependency.

Requests are read with ``Content-Length`` bodies (what the SDKs send); connections are kept
alive. JSON replies carry ``Content-Length``; streamed replies use chunked transfer encoding,
so a dropped connection is visible to the client as an incomplete body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


@dataclass(frozen=True)
class Received:
    """One request as it arrived: headers lower-cased, body parsed as JSON (or ``None``).
    ``connection`` numbers the TCP connection it came on, from 1."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    connection: int


@dataclass
class Frames:
    """A streamed reply: ``frames`` are written one per chunk, the first
    ``first_chunk_delay_s`` after the response head, the rest ``chunk_delay_s`` apart.

    ``disconnect_after``: drop the connection after that many frames (no terminating chunk).
    ``error_after`` with ``error_frame``: write ``error_frame`` after that many frames and end.
    ``stall_after`` with ``stall_s``: after that many frames, fall silent for ``stall_s``
    (a stream that stalls mid-answer), then go on; or stop, if the client leaves meanwhile.
    ``written`` counts the frames written so far (what an upstream would bill).
    """

    frames: Sequence[bytes]
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stall_after: int | None = None
    stall_s: float = 0.0
    disconnect_after: int | None = None
    error_after: int | None = None
    error_frame: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    written: int = 0


class Conn:
    """The writing side of one connection, with the few moves a fake makes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def head(self, status: int, headers: Mapping[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()

    async def json(self, status: int, body: Any, headers: Mapping[str, str]) -> None:
        data = json.dumps(body).encode()
        await self.head(
            status,
            {"content-type": "application/json", "content-length": str(len(data)), **headers},
        )
        self.writer.write(data)
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self.writer.drain()

    async def end_chunks(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    def drop(self) -> None:
        """Close the connection at once, mid-reply."""
        self.writer.transport.abort()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; return early with ``True`` if the client closes the connection.
        (While a reply is pending an HTTP/1.1 client sends nothing, so reading is safe.)"""
        try:
            async with asyncio.timeout(seconds):
                await self.until_client_closes()
        except TimeoutError:
            return False
        return True

    async def until_client_closes(self) -> None:
        """Wait (forever, if need be) for the client to close the connection."""
        while await self.reader.read(65536):
            pass


class FakeServer:
    """Accepts connections on 127.0.0.1 and hands each parsed request to :meth:`handle`.

    Counters for tests: ``received`` (every request), ``connections`` (TCP connections
    accepted), ``abandoned`` (replies the client walked away from: it closed the connection
    while the fake was hanging or still streaming), ``completed`` (replies written whole).
    :meth:`wait_for` waits, bounded, until a condition on them holds.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.connections = 0
        self.abandoned = 0
        self.completed = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._changed: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forget(self) -> None:
        """Count from now: ``received``, ``abandoned`` and ``completed`` start again (the
        connections stay open, and ``connections`` counts them still)."""
        self.received.clear()
        self.abandoned = 0
        self.completed = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._accept, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._stopping = True
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Return once ``predicate()`` holds; ``TimeoutError`` after ``timeout_s``."""
        assert self._changed is not None
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # owned: stop() cancels and awaits it
        self._writers.add(writer)
        self.connections += 1
        number = self.connections
        conn = Conn(reader, writer)
        try:
            while True:
                request = await _read_request(reader, number)
                if request is None:
                    break
                self.received.append(request)
                await self._notify()
                if not await self.handle(request, conn):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled this connection's task: end quietly, the server is going away.
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()
            await self._notify()

    async def handle(self, request: Received, conn: Conn) -> bool:
        """Answer ``request``; return whether the connection stays open. Override."""
        raise NotImplementedError

    async def delay(self, conn: Conn, seconds: float) -> bool:
        """Wait ``seconds`` before answering; ``False`` (and counted as abandoned) if the
        client gave up meanwhile."""
        if seconds and await conn.pause(seconds):
            self.abandoned += 1
            return False
        return True

    async def hang(self, conn: Conn) -> bool:
        """Never answer: wait until the client gives up and closes the connection."""
        await conn.until_client_closes()
        self.abandoned += 1
        return False

    async def stream(self, conn: Conn, reply: Frames, headers: Mapping[str, str]) -> bool:
        """Write a chunked ``text/event-stream`` reply frame by frame (see :class:`Frames`).
        Returns whether the connection may be reused."""
        await conn.head(
            200,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "transfer-encoding": "chunked",
                "cache-control": "no-cache",
                **headers,
                **reply.headers,
            },
        )
        try:
            for i, frame in enumerate(reply.frames):
                if reply.disconnect_after is not None and i >= reply.disconnect_after:
                    conn.drop()
                    return False
                if reply.error_after is not None and i >= reply.error_after:
                    await conn.chunk(reply.error_frame)
                    break
                delay = reply.chunk_delay_s if i else reply.first_chunk_delay_s
                if reply.stall_after is not None and i == reply.stall_after:
                    delay += reply.stall_s
                if delay and await conn.pause(delay):
                    self.abandoned += 1
                    return False
                await conn.chunk(frame)
                reply.written += 1
            await conn.end_chunks()
        except ConnectionError:
            self.abandoned += 1
            return False
        self.completed += 1
        return True

    async def reply_json(
        self, conn: Conn, status: int, body: Any, headers: Mapping[str, str]
    ) -> bool:
        await conn.json(status, body, headers)
        self.completed += 1
        return True


async def _read_request(reader: asyncio.StreamReader, connection: int) -> Received | None:
    line = await reader.readline()
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        raw = await reader.readline()
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    data = await reader.readexactly(length) if length else b""
    body = json.loads(data) if data else None
    return Received(method, path, headers, body, connection)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line, a ``data:`` line, a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def split(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` non-empty pieces (fewer if it is shorter)."""
    if not text:
        return []
    parts = max(1, min(parts, len(text)))
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]
