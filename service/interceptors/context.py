"""The first layer: gives the call its :class:`~service.context.CallContext`.

The request id is the caller's (the request's ``request_id`` field, else the ``x-request-id``
header, whichever is well formed: see :func:`service.context.request_id_problem`) or a new
one. A malformed ``request_id`` field is never bound here; the servicer rejects the call.
The trace is the server span opentelemetry-instrumentation-grpc opened, which is current here;
the call log reads its ids from it. When no span leaves the process (no exporter), the chain
has no server-span interceptor (its per-call objects cost about 4 KiB an idle stream): this
layer then makes the call's ids itself, given ``ids`` (a tracer provider that samples
nothing): a non-recording span continuing the caller's ``traceparent`` (the global
propagator), current for the call. This layer owns the context's scope: it resets it when
the call ends, whatever later layers bound. It also hands the layers inside it the servicer
context under the instrumentation's proxy (:func:`servicer_context`).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind

from service import context as call_context
from service.interceptors.base import Context, Layer, Method, StreamBehavior, UnaryBehavior

REQUEST_ID_HEADER = "x-request-id"


def request_id_of(context: Context) -> str:
    """The caller's ``x-request-id`` header when it is well formed, else a new id."""
    for key, value in context.invocation_metadata() or ():
        if (
            key == REQUEST_ID_HEADER
            and isinstance(value, str)
            and call_context.request_id_problem(value) is None
        ):
            return value
    return secrets.token_hex(16)  # 32 hex digits, as uuid4().hex but cheaper


def _own_request_id(request: Any) -> str:
    """The request's ``request_id`` field when it is well formed, else "" (also for a body
    that did not decode)."""
    value: str = getattr(request, "request_id", "")
    return value if value and call_context.request_id_problem(value) is None else ""


def _request_id(method: Method, request: Any, context: Context) -> str:
    if "request_id" in method.request_fields:
        # The servicer uses the request's own id first; the log must agree with it.
        return _own_request_id(request) or request_id_of(context)
    return request_id_of(context)


def servicer_context(context: Context) -> Context:
    """The servicer context under opentelemetry-instrumentation-grpc's proxy, if any.

    The proxy (a wrapt ``ObjectProxy`` subclass that records aborts on the server span)
    makes every method it does not override cost about 9 us instead of 0.5 us (measured:
    wrapt's attribute fallback for subclasses), and the layers and the servicer call a dozen
    of them per call. The chain passes the context under it inward; the status it would
    have recorded is recorded by the observe layer's span sink
    (:mod:`service.observability.server_span`) from the call's final status.
    """
    inner: Context = getattr(context, "__wrapped__", context)
    return inner


class ContextLayer(Layer):
    def __init__(self, ids: trace.TracerProvider | None = None) -> None:
        """``ids``: see the module docstring; None when a server-span interceptor runs
        outside this layer."""
        super().__init__()
        self._tracer = None if ids is None else ids.get_tracer("switchboard")

    def _trace(self, method: Method, context: Context) -> Token[otel_context.Context] | None:
        """The call's non-recording span made current (its detach token), or None."""
        if self._tracer is None:
            return None
        parent = extract(dict(context.invocation_metadata() or ()))
        span = self._tracer.start_span(method.rpc, parent, kind=SpanKind.SERVER)
        return otel_context.attach(trace.set_span_in_context(span, parent))

    async def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        context = servicer_context(context)
        traced = self._trace(method, context)
        bound = call_context.CallContext(_request_id(method, request, context))
        token = call_context.bind(bound)
        try:
            return await call(request, context)
        finally:
            call_context.reset(token)
            if traced is not None:
                otel_context.detach(traced)

    async def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        context = servicer_context(context)
        traced = self._trace(method, context)
        bound = call_context.CallContext(_request_id(method, request, context))
        token = call_context.bind(bound)
        try:
            async for response in call(request, context):
                yield response
        finally:
            call_context.reset(token)
            if traced is not None:
                otel_context.detach(traced)
