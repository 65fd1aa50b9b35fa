"""What the model-API doors (OpenAI, Anthropic) share: the chain-wrapped servicer methods they
call, the servicer context of a request, and answering a Stream as server-sent events.

Each door keeps its own wire knowledge (request and answer shapes, its error table); this
module only carries events from the servicer to the socket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing
from typing import Any

import grpc
import msgspec
from switchboard.v1 import agent_pb2 as pb

from service.http.asgi import Scope, Send
from service.http.context import DoorContext, Failure, metadata_of

# A chain-wrapped servicer method, called with a DoorContext in place of grpc's context.
UnaryBehavior = Callable[[Any, Any], Awaitable[Any]]
StreamBehavior = Callable[[Any, Any], AsyncIterator[Any]]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class Behaviors:
    """The AgentService methods as the chain wraps them for one door, built once."""

    def __init__(
        self,
        invoke: UnaryBehavior,
        stream: StreamBehavior,
        list_agents: UnaryBehavior,
        get_agent: UnaryBehavior,
    ) -> None:
        self.invoke = invoke
        self.stream = stream
        self.list_agents = list_agents
        self.get_agent = get_agent


def door_context(scope: Scope) -> DoorContext:
    """The servicer context of an HTTP request: its headers as metadata, its peer."""
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else ""  # grpc_peer gives it its family
    return DoorContext(metadata_of(scope["headers"]), None, peer)


def dump(value: Any) -> bytes:
    """Compact JSON, UTF-8 (msgspec's encoder: several times the standard library's)."""
    return msgspec.json.encode(value)


async def all_agents(list_agents: UnaryBehavior, context: DoorContext) -> list[pb.Agent]:
    """Every agent the caller may call, page by page.

    Raises:
        grpc.aio.AbortError: the chain refused the call (``context.failure()`` says why).
    """
    agents: list[pb.Agent] = []
    token = ""
    while True:
        page: pb.ListAgentsResponse = await list_agents(
            pb.ListAgentsRequest(page_size=1000, page_token=token), context
        )
        agents.extend(page.agents)
        token = page.next_page_token
        if not token:
            return agents


class SseAnswer:
    """How one door writes a stream: its events for a contract event, its error event, its
    headers (given the request id) and what ends a complete stream."""

    def __init__(
        self,
        events: Callable[[pb.StreamResponse], Iterable[bytes]],
        error: Callable[[Failure], bytes],
        headers: Callable[[str], list[tuple[bytes, bytes]]],
        refuse: Callable[[Send, Failure], Awaitable[None]],
        done: bytes = b"",
    ) -> None:
        self.events = events
        self.error = error
        self.headers = headers
        self.refuse = refuse
        self.done = done


async def answer_stream(
    behavior: StreamBehavior, request: Any, context: DoorContext, send: Send, how: SseAnswer
) -> None:
    """Run the Stream and send its events as SSE, once its first event is there: a refusal
    before it (auth, limits, an unknown agent) is an HTTP error status (``how.refuse``), an
    error after it a last error event, without ``how.done``."""
    events: AsyncIterator[pb.StreamResponse] = behavior(request, context)
    async with aclosing(events):  # type: ignore[type-var]
        try:
            first = await anext(events)
        except grpc.aio.AbortError:
            await how.refuse(send, context.failure())
            return
        except StopAsyncIteration:
            first = None
        request_id = ""
        if first is not None and first.WhichOneof("event") == "start":
            request_id = first.start.request_id
        start = {"type": "http.response.start", "status": 200, "headers": how.headers(request_id)}
        await send(start)
        try:
            if first is not None:
                await _send_events(send, how.events(first))
            async for event in events:
                await _send_events(send, how.events(event))
        except grpc.aio.AbortError:
            await send({"type": "http.response.body", "body": how.error(context.failure())})
            return
    await send({"type": "http.response.body", "body": how.done})


async def _send_events(send: Send, events: Iterable[bytes]) -> None:
    body = b"".join(events)
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})
