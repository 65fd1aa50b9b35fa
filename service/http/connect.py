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

connectrpc decodes the body itself: a body that is not the method's message is answered
``invalid_argument`` by the library, before the chain (so it is not in the call metrics).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_codecs
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from protobuf.wkt import Any as ConnectAny

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


def _unary(behavior: UnaryBehavior) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]]:
    async def call(request: Any, ctx: RequestContext[Any, Any]) -> Any:
        context = _context(ctx)
        try:
            return await behavior(request, context)
        except grpc.aio.AbortError:
            raise connect_error(context.failure()) from None

    return call


def _stream(
    behavior: StreamBehavior,
) -> Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]]:
    async def call(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        context = _context(ctx)
        try:
            async for response in behavior(request, context):
                yield response
        except grpc.aio.AbortError:
            raise connect_error(context.failure()) from None

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
            codecs=google_protobuf_codecs(),
        )
        self._path = path

    @property
    def path(self) -> str:
        return self._path


def service_app(
    service: ServiceDescriptor,
    unary: Callable[[str], UnaryBehavior | None],
    stream: Callable[[str], StreamBehavior | None],
) -> ServiceApp:
    """A Connect app for ``service``: each method's behavior is ``unary(name)`` or
    ``stream(name)`` (the chain-wrapped servicer method named "/pkg.Service/Method");
    methods without one are not served. Client and bidi streaming are not in the contract."""
    endpoints: dict[str, Any] = {}
    for method in service.methods:
        name = f"/{service.full_name}/{method.name}"
        info = method_info(method)
        if method.server_streaming:
            behavior = stream(name)
            if behavior is not None:
                endpoints[name] = Endpoint.server_stream(info, _stream(behavior))
        else:
            found = unary(name)
            if found is not None:
                endpoints[name] = Endpoint.unary(info, _unary(found))
    return ServiceApp(f"/{service.full_name}", endpoints)


def prefixes(apps: Sequence[ServiceApp]) -> dict[str, ServiceApp]:
    """``{"/pkg.Service/": app}`` for routing by path."""
    return {app.path + "/": app for app in apps}
