"""The Anthropic-compatible door: ``POST /v1/messages`` (JSON, or SSE when ``stream``), and
``GET /v1/models`` in Anthropic's shape when the request has an ``anthropic-version`` header
(as Anthropic's SDKs send it; without it the path is the OpenAI door's).

As the OpenAI door does, each request becomes the contract's request and runs the
AgentService servicer in the same interceptor chain as a gRPC call: auth (``x-api-key``, as
Anthropic's SDKs send the key, or ``Authorization: Bearer``), limits, metrics, the runner.
A body that cannot be carried is refused by the chain's decode layer (INVALID_ARGUMENT, 400
naming the field). Errors are Anthropic's error body (:mod:`service.http.anthropic_events`),
with the request id in the body and the ``request-id`` header (Anthropic's) and
``x-request-id``. A stream's error after its first event is a last ``error`` event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from switchboard.v1 import agent_pb2 as pb

from service.agents.spec import AgentSpec
from service.http import anthropic_events as wire
from service.http import anthropic_messages as body_of
from service.http.asgi import (
    BodyTooLarge,
    Disconnected,
    Receive,
    Scope,
    Send,
    read_body,
    respond,
    until_disconnect,
)
from service.http.body import BadBody, in_callers_terms, parse_body
from service.http.context import DoorContext, Failure
from service.http.door import (
    SSE_HEADERS,
    Behaviors,
    SseAnswer,
    all_agents,
    answer_stream,
    door_context,
    dump,
)
from service.interceptors.decode import Undecodable

_NO_PATHS = body_of.Paths()


def _ids(request_id: str) -> list[tuple[bytes, bytes]]:
    if not request_id:
        return []
    value = request_id.encode()
    return [(b"request-id", value), (b"x-request-id", value)]


def _in_anthropic_terms(failure: Failure, paths: body_of.Paths) -> Failure:
    param, message = in_callers_terms(failure.field, failure.message, paths.param)
    return dataclasses.replace(failure, field=param, message=message)


async def refuse(send: Send, failure: Failure, paths: body_of.Paths = _NO_PATHS) -> None:
    """Answer ``failure`` as Anthropic's API would (status, error body, retry-after)."""
    failure = _in_anthropic_terms(failure, paths)
    headers = [(b"content-type", b"application/json"), *_ids(failure.request_id)]
    if (seconds := failure.retry_after_header) is not None:
        headers.append((b"retry-after", seconds.encode()))
    await respond(send, wire.http_status(failure), dump(wire.error_body(failure)), headers)


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dump(data) + b"\n\n"


class AnthropicDoor:
    """``agent`` finds an agent of the current config by name (for ``max_tokens``)."""

    def __init__(self, behaviors: Behaviors, agent: Callable[[str], AgentSpec | None]) -> None:
        self._do = behaviors
        self._agent = agent

    async def messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await read_body(receive, body_of.MAX_BODY_BYTES)
        except BodyTooLarge:
            limit = body_of.MAX_BODY_BYTES
            body = {
                "type": "error",
                "error": {
                    "type": "request_too_large",
                    "message": f"the request body is larger than {limit} bytes",
                },
            }
            await respond(send, 413, dump(body))
            return
        except Disconnected:
            return
        request: Any
        stream = False
        paths = _NO_PATHS
        try:
            body = parse_body(raw)
            stream = body_of.wants_stream(body)
            request, paths = body_of.messages_request(body, self._agent, stream=stream)
        except BadBody as bad:
            request = Undecodable(bad.problem, len(raw), bad.field)
        context = door_context(scope)
        if stream:
            work = self._stream(request, context, send, paths)
        else:
            work = self._invoke(request, context, send, paths)
        await until_disconnect(receive, work)

    async def _invoke(
        self, request: Any, context: DoorContext, send: Send, paths: body_of.Paths
    ) -> None:
        try:
            response: pb.InvokeResponse = await self._do.invoke(request, context)
        except grpc.aio.AbortError:
            await refuse(send, context.failure(), paths)
            return
        headers = [(b"content-type", b"application/json"), *_ids(response.request_id)]
        await respond(send, 200, dump(wire.message(response)), headers)

    async def _stream(
        self, request: Any, context: DoorContext, send: Send, paths: body_of.Paths
    ) -> None:
        converter = wire.Events(getattr(request, "agent", ""))

        def events(event: pb.StreamResponse) -> Iterable[bytes]:
            return (_sse(name, data) for name, data in converter.of(event))

        def error(failure: Failure) -> bytes:
            return _sse("error", wire.error_body(_in_anthropic_terms(failure, paths)))

        async def refused(send: Send, failure: Failure) -> None:
            await refuse(send, failure, paths)

        def headers(request_id: str) -> list[tuple[bytes, bytes]]:
            return [*SSE_HEADERS, *_ids(request_id)]

        how = SseAnswer(events, error, headers, refused)
        await answer_stream(self._do.stream, request, context, send, how)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Anthropic's model list: the agents the caller's key may call, in one page."""
        context = door_context(scope)
        try:
            agents = await all_agents(self._do.list_agents, context)
        except grpc.aio.AbortError:
            await refuse(send, context.failure())
            return
        data = [_model(agent) for agent in agents]
        page = {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        await respond(send, 200, dump(page))

    async def model(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        context = door_context(scope)
        try:
            found: pb.GetAgentResponse = await self._do.get_agent(
                pb.GetAgentRequest(name=name), context
            )
        except grpc.aio.AbortError:
            await refuse(send, context.failure())
            return
        await respond(send, 200, dump(_model(found.agent)))


def _model(agent: pb.Agent) -> dict[str, Any]:
    return {
        "type": "model",
        "id": agent.name,
        "display_name": agent.description or agent.name,
        "created_at": "1970-01-01T00:00:00Z",
    }
