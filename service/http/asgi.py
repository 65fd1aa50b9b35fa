"""ASGI plumbing the doors share: reading a bounded body, answering, and ending a call when
its client goes away (as grpc cancels a call whose client cancelled).

Raw ASGI rather than a framework: a door has a handful of routes, and every microsecond
here is added to every call (docs/benchmarks.md measures the door against gRPC).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body is past the door's limit."""


class Disconnected(Exception):
    """The client went away before its request body arrived."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body.

    Raises:
        BodyTooLarge: more than ``limit`` bytes.
        Disconnected: the client left first.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": headers or [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def until_disconnect(receive: Receive, work: Awaitable[None]) -> None:
    """Run ``work``; cancel it if the client disconnects first (its call then ends as
    CANCELLED in the metrics and the log, as a cancelled gRPC call does), and wait for its
    clean-up. Call only once the request body has been read: every later message is a
    disconnect. Raises what ``work`` raises."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait([task, watcher], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
        # wait(), not await: a cancellation of this handler itself must not be swallowed.
        await asyncio.wait([task, watcher])
    if not task.cancelled():
        task.result()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
