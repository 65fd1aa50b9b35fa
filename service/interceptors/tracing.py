"""The server span of every call, continuing the caller's trace (W3C ``traceparent``).

Name and attributes follow the OpenTelemetry RPC conventions (``rpc.system``,
``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``), as opentelemetry-instrumentation-grpc
sets them, plus ``switchboard.door``: the door the call came through (the HTTP doors run the
same layers, :mod:`service.http`). It is our own layer rather than that package's aio
interceptor because the latter rebuilds the method handler and wraps the servicer context in
a proxy on every call, and records every abort (each auth or rate-limit refusal) as an
exception event. Measured with bench/chain_micro.py: ~50 us a call against ~30 us for this
layer, and the whole chain costs ~100 us with it in front against ~80 us with this layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from service.interceptors.base import Context, Method, StreamBehavior, UnaryBehavior
from service.interceptors.observe import final_code

_PROPAGATOR = TraceContextTextMapPropagator()


class _MetadataGetter(Getter[Any]):
    def get(self, carrier: Any, key: str) -> list[str] | None:
        for name, value in carrier:
            if name == key and isinstance(value, str):
                return [value]
        return None

    def keys(self, carrier: Any) -> list[str]:
        return [name for name, _ in carrier]


_GETTER = _MetadataGetter()
# OpenTelemetry's rpc.system values (RPC semantic conventions): gRPC-Web is gRPC's
# protocol; the OpenAI and Anthropic doors are not RPC protocols, so they set none.
_RPC_SYSTEMS = {"grpc": "grpc", "grpc_web": "grpc", "connect": "connect_rpc"}


def span_attributes(method: Method) -> Attributes:
    """The server span's attributes: the contract method run, and the door it came
    through (``switchboard.door``)."""
    attributes: dict[str, str] = {
        "rpc.service": method.service,
        "rpc.method": method.short_name,
        "switchboard.door": method.door,
    }
    if (system := _RPC_SYSTEMS.get(method.door)) is not None:
        attributes["rpc.system"] = system
    return attributes


class TracingLayer:
    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        self._tracer = tracer_provider.get_tracer("switchboard.grpc")

    def _start(self, method: Method, context: Context, attributes: Attributes) -> trace.Span:
        metadata = context.invocation_metadata() or ()
        parent = _PROPAGATOR.extract(metadata, getter=_GETTER) if metadata else None
        return self._tracer.start_span(
            method.name.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    @staticmethod
    def _end(span: trace.Span, context: Context, error: BaseException | None) -> None:
        code = final_code(context, error)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()

    def unary(self, method: Method, behavior: UnaryBehavior) -> UnaryBehavior:
        attributes = span_attributes(method)

        async def traced(request: Any, context: Context) -> Any:
            span = self._start(method, context, attributes)
            token = otel_context.attach(trace.set_span_in_context(span))
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                otel_context.detach(token)
                self._end(span, context, error)

        return traced

    def stream(self, method: Method, behavior: StreamBehavior) -> StreamBehavior:
        attributes = span_attributes(method)

        async def traced(request: Any, context: Context) -> AsyncIterator[Any]:
            span = self._start(method, context, attributes)
            token = otel_context.attach(trace.set_span_in_context(span))
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                otel_context.detach(token)
                self._end(span, context, error)

        return traced
