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
    """Run ``work`` in this task; cancel it if the client disconnects first (its call then
    ends as CANCELLED in the metrics and the log, as a cancelled gRPC call does). Call only
    once the request body has been read: every later message is a disconnect. Raises what
    ``work`` raises, and a cancellation of this task that did not come from the client.

    One watcher task, not a second task for ``work`` and ``asyncio.wait`` over both: that
    cost about 8x as much per request (bench/doors_bench.py measures the door's CPU).
    """
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("until_disconnect runs in a task (an ASGI server's)")
    finished = False

    def gone(watcher: asyncio.Future[None]) -> None:
        # Scheduled when the watcher ends; a no-op once ``work`` is over (the callback may
        # already be queued then) or when it was cancelled rather than told of a disconnect.
        if not finished and not watcher.cancelled():
            task.cancel()

    watcher = asyncio.ensure_future(_disconnect(receive))
    watcher.add_done_callback(gone)
    try:
        await work
    except asyncio.CancelledError:
        # Ours (the client left) and no other cancellation pending: the call is over.
        if watcher.done() and not watcher.cancelled() and task.uncancel() == 0:
            return
        raise
    finally:
        finished = True
        watcher.cancel()  # it ends at its next step; nothing waits for a client's message


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
