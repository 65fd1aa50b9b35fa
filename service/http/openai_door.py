"""The OpenAI-compatible door: ``POST /v1/chat/completions`` (JSON, or SSE when
``stream``), ``GET /v1/models`` and ``GET /v1/models/{agent}``.

Each request becomes the contract's request and runs the AgentService servicer wrapped in
the same interceptor chain as a gRPC call (:class:`~service.http.context.DoorContext`):
tracing, request id, metrics and the call log, the fault layer, auth (``Authorization:
Bearer`` or ``x-api-key``), rate limits, then admission, idempotency, the runner. A body
that cannot be carried goes down the chain as an undecodable request, so it is refused by
the decode layer (INVALID_ARGUMENT) before auth, counted and logged like any refusal.
Errors are answered through the door's one table (:mod:`service.http.errors`).

A stream is answered once its first event is there: a refusal (auth, limits, an unknown
agent) is an HTTP error status; an error after the first event is a last SSE event
``{"error": {...}}`` (which the OpenAI SDKs raise as ``APIError``), without ``[DONE]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from switchboard.v1 import agent_pb2 as pb

from service.http import openai_chat as chat
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
from service.http.errors import error_body, error_headers, error_json, http_status
from service.interceptors.decode import Undecodable

_JSON = [(b"content-type", b"application/json")]
_NO_BODY: Mapping[str, Any] = {}


def _in_openai_terms(failure: Failure, body: Mapping[str, Any]) -> Failure:
    """``failure`` with the contract's field names (``param`` and the message's start) in
    OpenAI's (``parameters.top_p`` → ``top_p``)."""
    param, message = in_callers_terms(
        failure.field, failure.message, lambda field: chat.openai_param(field, body)
    )
    return dataclasses.replace(failure, field=param, message=message)


async def _fail(send: Send, failure: Failure, body: Mapping[str, Any] = _NO_BODY) -> None:
    failure = _in_openai_terms(failure, body)
    await respond(send, http_status(failure), error_json(failure), error_headers(failure))


def _sse_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    return [*SSE_HEADERS, (b"x-request-id", request_id.encode())] if request_id else SSE_HEADERS


class OpenAIDoor:
    def __init__(self, behaviors: Behaviors) -> None:
        self._do = behaviors

    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await read_body(receive, chat.MAX_BODY_BYTES)
        except BodyTooLarge:
            failure = Failure(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body is larger than {chat.MAX_BODY_BYTES} bytes",
            )
            await respond(send, 413, error_json(failure), error_headers(failure))
            return
        except Disconnected:
            return
        request: Any
        stream, include_usage = False, False
        body: dict[str, Any] = {}
        try:
            body = parse_body(raw)
            stream, include_usage = chat.wants_stream(body)
            request = chat.chat_request(body, stream=stream)
        except BadBody as bad:
            request = Undecodable(bad.problem, len(raw), bad.field)
        context = door_context(scope)
        if stream:
            work = self._stream(request, context, include_usage, send, body)
        else:
            work = self._invoke(request, context, send, body)
        await until_disconnect(receive, work)

    async def _invoke(
        self, request: Any, context: DoorContext, send: Send, body: Mapping[str, Any]
    ) -> None:
        try:
            response: pb.InvokeResponse = await self._do.invoke(request, context)
        except grpc.aio.AbortError:
            await _fail(send, context.failure(), body)
            return
        headers = [*_JSON, (b"x-request-id", response.request_id.encode())]
        await respond(send, 200, dump(chat.completion(response)), headers)

    async def _stream(
        self,
        request: Any,
        context: DoorContext,
        include_usage: bool,
        send: Send,
        body: Mapping[str, Any],
    ) -> None:
        chunks = chat.Chunks(getattr(request, "agent", ""), include_usage)

        def events(event: pb.StreamResponse) -> Iterable[bytes]:
            return (b"data: " + dump(chunk) + b"\n\n" for chunk in chunks.of(event))

        def error(failure: Failure) -> bytes:
            return b"data: " + dump(error_body(_in_openai_terms(failure, body))) + b"\n\n"

        async def refuse(send: Send, failure: Failure) -> None:
            await _fail(send, failure, body)

        how = SseAnswer(events, error, _sse_headers, refuse, done=b"data: [DONE]\n\n")
        await answer_stream(self._do.stream, request, context, send, how)

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """OpenAI's model list: the agents the caller's key may call."""
        context = door_context(scope)
        try:
            agents = await all_agents(self._do.list_agents, context)
        except grpc.aio.AbortError:
            await _fail(send, context.failure())
            return
        data = [_model(agent) for agent in agents]
        await respond(send, 200, dump({"object": "list", "data": data}))

    async def model(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        context = door_context(scope)
        try:
            found: pb.GetAgentResponse = await self._do.get_agent(
                pb.GetAgentRequest(name=name), context
            )
        except grpc.aio.AbortError:
            await _fail(send, context.failure())
            return
        await respond(send, 200, dump(_model(found.agent)))


def _model(agent: pb.Agent) -> dict[str, Any]:
    return {"id": agent.name, "object": "model", "created": 0, "owned_by": "switchboard"}
