"""The Connect door: the contract's services over the Connect protocol (JSON or binary, unary
and server streaming) and gRPC-Web, on the HTTP listener, with connectrpc (connect-python).

``curl -H 'content-type: application/json' -d '{"agent": "echo", ...}'
http://HOST:8080/switchboard.v1.AgentService/Invoke`` answers the same JSON as grpcurl. Each
method's endpoint is built from the contract's descriptors (no generated Connect code) and
calls the servicer method wrapped in the same interceptor chain as a gRPC call, with a
:class:`~service.http.context.DoorContext` built from the request's headers and its Connect
timeout (``connect-timeout-ms``, or ``grpc-timeout`` for gRPC-Web). A refusal becomes a
``ConnectError`` with the same code, message and details (ErrorInfo, BadRequest, RetryInfo…)
the gRPC door sends: Connect's codes are gRPC's.

The codecs (:mod:`service.http.connect_codecs`) are strict and never raise: a body that is not
the method's message (an unknown field or enum value included) goes down the chain as an
undecodable request, refused INVALID_ARGUMENT by its decode layer, traced and counted. The
request id is sent as ``x-request-id`` (a header; a trailer in gRPC-Web). Calls are labelled
``connect`` or ``grpc_web`` by their content type (metrics, call log, spans).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from protobuf.wkt import Any as ConnectAny

from service.http.connect_codecs import BinaryCodec, JsonCodec
from service.http.context import DoorContext, Failure

UnaryBehavior = Callable[[Any, Any], Awaitable[Any]]
StreamBehavior = Callable[[Any, Any], AsyncIterator[Any]]
_CODES = {code.name: code for code in Code}
_CODES["CANCELLED"] = Code.CANCELED


def connect_error(failure: Failure) -> ConnectError:
    """The ConnectError saying what the gRPC status would: same code, message, details."""
    details = [
        ErrorDetail(ConnectAny(type_url=packed.type_url, value=packed.value))
        for packed in failure.details
    ]
    return ConnectError(_CODES.get(failure.code.name, Code.INTERNAL), failure.message, details)


def _context(ctx: RequestContext[Any, Any]) -> DoorContext:
    metadata = tuple(ctx.request_headers.allitems())
    timeout_ms = ctx.timeout_ms
    timeout = None if timeout_ms is None else max(0.0, timeout_ms / 1000)
    return DoorContext(metadata, timeout, ctx.client_address or "")


def door_of(ctx: RequestContext[Any, Any]) -> str:
    """``grpc_web`` or ``connect``: the protocol the request speaks (its content type)."""
    content_type: str = ctx.request_headers.get("content-type", "")
    return "grpc_web" if content_type.startswith("application/grpc") else "connect"


def _tell_request_id(ctx: RequestContext[Any, Any], door: str, request_id: str) -> None:
    """``x-request-id`` as the gRPC door sends it: a header for Connect, a trailer for
    gRPC-Web (which a browser reads with the status)."""
    if request_id:
        if door == "grpc_web":
            ctx.response_trailers["x-request-id"] = request_id
        else:
            ctx.response_headers["x-request-id"] = request_id


def _unary(
    behaviors: Mapping[str, UnaryBehavior],
) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]]:
    async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        context, door = _context(ctx), door_of(ctx)
        try:
            response = await behaviors[door](request, context)
        except grpc.aio.AbortError:
            failure = context.failure()
            _tell_request_id(ctx, door, failure.request_id)
            raise connect_error(failure) from None
        _tell_request_id(ctx, door, getattr(response, "request_id", ""))
        return response

    return call


def _stream(
    behaviors: Mapping[str, StreamBehavior],
) -> Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]]:
    async def call(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        context, door = _context(ctx), door_of(ctx)
        first = True
        try:
            async for response in behaviors[door](request, context):
                if first:  # the start event, sent with the response's headers
                    first = False
                    start = getattr(response, "start", None)
                    _tell_request_id(ctx, door, getattr(start, "request_id", ""))
                yield response
        except grpc.aio.AbortError:
            failure = context.failure()
            if first:
                _tell_request_id(ctx, door, failure.request_id)
            raise connect_error(failure) from None

    return call


def _message_class(descriptor: Any) -> type[Any]:
    return message_factory.GetMessageClass(descriptor)


def method_info(method: MethodDescriptor) -> MethodInfo[Any, Any]:
    return MethodInfo(
        name=method.name,
        service_name=method.containing_service.full_name,
        input=_message_class(method.input_type),
        output=_message_class(method.output_type),
        idempotency_level=IdempotencyLevel.UNKNOWN,
        stream_type=StreamType.SERVER_STREAM if method.server_streaming else StreamType.UNARY,
    )


class ServiceApp(ConnectASGIApplication[object]):
    """One service's methods as Connect endpoints."""

    def __init__(self, path: str, endpoints: Mapping[str, Any]) -> None:
        super().__init__(
            service=object(),
            endpoints=lambda _service: endpoints,
            codecs=[BinaryCodec(), JsonCodec()],
        )
        self._path = path

    @property
    def path(self) -> str:
        return self._path


DOORS = ("connect", "grpc_web")


def service_app(
    service: ServiceDescriptor,
    unary: Callable[[str, str], UnaryBehavior | None],
    stream: Callable[[str, str], StreamBehavior | None],
) -> ServiceApp:
    """A Connect app for ``service``: each method's behavior is ``unary(name, door)`` or
    ``stream(name, door)`` (the chain-wrapped servicer method named "/pkg.Service/Method",
    labelled with the door: ``connect`` or ``grpc_web``); methods without one are not
    served. Client and bidi streaming are not in the contract."""
    endpoints: dict[str, Any] = {}
    for method in service.methods:
        name = f"/{service.full_name}/{method.name}"
        info = method_info(method)
        if method.server_streaming:
            streams = {door: stream(name, door) for door in DOORS}
            if all(streams.values()):
                endpoints[name] = Endpoint.server_stream(info, _stream(streams))  # type: ignore[arg-type]
        else:
            unaries = {door: unary(name, door) for door in DOORS}
            if all(unaries.values()):
                endpoints[name] = Endpoint.unary(info, _unary(unaries))  # type: ignore[arg-type]
    return ServiceApp(f"/{service.full_name}", endpoints)


def prefixes(apps: Sequence[ServiceApp]) -> dict[str, ServiceApp]:
    """``{"/pkg.Service/": app}`` for routing by path."""
    return {app.path + "/": app for app in apps}
