"""The server span of a call through an HTTP door that is not an RPC protocol (the OpenAI
and Anthropic doors).

opentelemetry-instrumentation-grpc makes the server span of gRPC, gRPC-Web and Connect calls
and names its protocol (``rpc.system``); a call through the OpenAI door is not one, so this
layer makes its server span the same way (the caller's ``traceparent`` through the global
propagator, the contract method it runs as ``rpc.service`` and ``rpc.method``) without
``rpc.system``. The observe layer's span sink then adds the same facts and status as for
every other door (:mod:`service.observability.server_span`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind

from service.interceptors.base import Context, Layer, Method, StreamBehavior, UnaryBehavior


class DoorSpanLayer(Layer):
    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        super().__init__()
        self._tracer = tracer_provider.get_tracer("switchboard.doors")

    @contextmanager
    def _span(self, method: Method, context: Context) -> Iterator[trace.Span]:
        headers = dict(context.invocation_metadata() or ())
        attributes = {
            "rpc.service": method.service,
            "rpc.method": method.short_name,
            "switchboard.door": method.door,
        }
        # The peer in grpc's form ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"): HTTP's client.address.
        kind, _, endpoint = context.peer().partition(":")
        if kind in {"ipv4", "ipv6"}:
            host, _, port = endpoint.rpartition(":")
            attributes["client.address"] = host.strip("[]")
            attributes["client.port"] = port
        with self._tracer.start_as_current_span(
            method.rpc,
            context=extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            # As the gRPC instrumentation: the status comes from the call's final code.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    async def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        with self._span(method, context):
            return await call(request, context)

    async def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        with self._span(method, context):
            async for response in call(request, context):
                yield response
