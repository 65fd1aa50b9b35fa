"""THE order of the interceptor chain, in one list. Every call passes, outermost first:

1. tracing      the server span, made by opentelemetry-instrumentation-grpc's aio server
                interceptor (RPC conventions, the caller's ``traceparent`` continued; health
                and reflection not traced unless configured: :mod:`service.observability.tracing`);
                absent when no span leaves the process (no exporter)
2. context      request id → :class:`~service.context.CallContext` (owns its scope); without
                layer 1, the call's trace ids (a non-recording span)
3. observe      sees the final status of every agent-facing call, refused ones included, and
                hands a record to the metrics, the call log and the server span
4. faults       an exception nothing mapped becomes INTERNAL "internal error", its traceback
                logged once per kind and window (:mod:`service.observability.faults`)
5. decode       a body that did not decode is INVALID_ARGUMENT (before auth: it costs a
                caller nothing to send, so it must cost the server little)
6. auth         API key → tenant, key id, allowed agents (health, open reflection exempt)
7. rate limit   per tenant and per key: requests, tokens, concurrent streams
then the servicer; whether the key may call the named agent is checked where the runner
resolves the agent, so every path that names an agent is covered and ListAgents lists
only the agents the key may call.

Layers 2 to 7 are grpc-interceptor ``AsyncServerInterceptor`` subclasses
(:class:`~service.interceptors.base.Layer`); the first is the instrumentation's own. The
chain asks each interceptor's ``intercept_service`` once per method and door and keeps the
handler it builds (grpc would ask them on every call, and each builds a new handler). The
HTTP doors run the same chain; a door that is not an RPC protocol (OpenAI, Anthropic) gets
its server span from :class:`~service.interceptors.door_span.DoorSpanLayer` instead of the
gRPC instrumentation. Every method whose request is one message gets a tolerant deserializer
(:func:`service.interceptors.decode.tolerant`): grpc runs it before any layer, so a failure
there would otherwise escape the chain.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from service.auth.policy import AuthPolicy
from service.interceptors.auth import AuthLayer
from service.interceptors.base import (
    Context,
    Continuation,
    Handler,
    Method,
    MethodName,
    StreamBehavior,
    UnaryBehavior,
    callable_by_grpc,
)
from service.interceptors.context import ContextLayer
from service.interceptors.decode import DecodeLayer, tolerant
from service.interceptors.faults import FaultLayer
from service.interceptors.observe import ObserveLayer, Sink
from service.interceptors.rate_limit import RateLimitLayer
from service.observability.faults import FaultLog
from service.ratelimit import RateLimiter

if TYPE_CHECKING:  # generic only in the stubs
    from opentelemetry.trace import TracerProvider

    from service.agents.spec import AgentSpec

    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Interceptor = grpc.aio.ServerInterceptor


def build_chain(
    *,
    tracing: Interceptor | None,
    http_tracing: Interceptor | None = None,
    trace_ids: TracerProvider | None = None,
    auth: Callable[[], AuthPolicy],
    auth_catch_up: Callable[[], Awaitable[bool]] | None = None,
    limiter: RateLimiter,
    sinks: Sequence[Sink],
    default_deadline_s: Callable[[], float],
    faults: FaultLog,
    agent: Callable[[str], AgentSpec | None] = lambda _name: None,
    every_call: Sequence[Sink] = (),
) -> Chain:
    """The chain, outermost first (see the module docstring). The gRPC server takes it as
    its interceptor; the HTTP doors wrap the same servicer methods with it
    (:meth:`Chain.unary_behavior`, :meth:`Chain.stream_behavior`). ``tracing``: the server
    span's interceptor (:func:`service.observability.tracing.server_interceptor`), None for
    no server spans; ``http_tracing`` the same for the doors that are not RPC protocols.
    ``trace_ids``: with neither, the provider whose (non-recording) spans give each call its
    trace and span ids (:class:`~service.interceptors.context.ContextLayer`).
    ``auth_catch_up``: see :class:`~service.interceptors.auth.AuthLayer`. ``sinks`` see the
    agent-facing calls, ``every_call`` health and reflection too
    (:class:`~service.interceptors.observe.ObserveLayer`)."""
    layers: list[Interceptor] = [
        ContextLayer(trace_ids),
        ObserveLayer(sinks, every_call),
        FaultLayer(faults),
        DecodeLayer(),
        AuthLayer(auth, auth_catch_up),
        RateLimitLayer(limiter, auth, default_deadline_s, agent),
    ]
    return Chain(layers, tracing=tracing, http_tracing=http_tracing)


class _Details(grpc.HandlerCallDetails):
    """What the interceptors are asked about when a method is composed: its name. (The
    call's metadata is the servicer context's, read per call.)"""

    def __init__(self, method: MethodName) -> None:
        self.method = method
        self.invocation_metadata = ()


RPC_DOORS = frozenset({"grpc", "grpc_web", "connect"})
"""Doors that are RPC protocols: their server span is the gRPC instrumentation's."""


class Chain(Interceptor):
    """Applies ``tracing`` and ``layers`` (outermost first) to every method's handler, once
    per method and door; ``http_tracing`` replaces ``tracing`` for the doors that are not
    RPC protocols."""

    def __init__(
        self,
        layers: Sequence[Interceptor],
        *,
        tracing: Interceptor | None = None,
        http_tracing: Interceptor | None = None,
    ) -> None:
        self._layers = tuple(layers)
        self._tracing = () if tracing is None else (tracing,)
        self._http_tracing = () if http_tracing is None else (http_tracing,)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler: Handler | None = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value] # unknown method: UNIMPLEMENTED
        name: str = handler_call_details.method
        cached = self._wrapped.get(name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = await self.compose(name, handler)
        self._wrapped[name] = (handler, wrapped)
        return wrapped

    async def compose(self, name: str, handler: Handler, door: str = "grpc") -> Handler:
        """``handler`` of method ``name`` ("/package.Service/Method") inside every
        interceptor, as the server runs it for calls through ``door``."""
        handler = _normalized(name, handler)
        details = _Details(MethodName(Method.of_handler(name, handler, door)))
        tracing = self._tracing if door in RPC_DOORS else self._http_tracing
        for interceptor in reversed((*tracing, *self._layers)):
            handler = await interceptor.intercept_service(_returning(handler), details)
        return callable_by_grpc(handler)

    def unary_behavior(self, name: str, behavior: UnaryBehavior, door: str) -> UnaryBehavior:
        """``behavior`` (a servicer method answering one message) inside the chain, as the
        gRPC server runs method ``name``: for a door that calls the servicer without grpc's
        transport. ``door`` (one of :data:`~service.interceptors.base.DOORS`) labels its
        metrics, log lines and spans. Build it once, call it per request (composed on the
        first call)."""
        composed: UnaryBehavior | None = None

        async def call(request: Any, context: Context) -> Any:
            nonlocal composed
            if composed is None:
                handler = grpc.unary_unary_rpc_method_handler(behavior)
                composed = (await self.compose(name, handler, door)).unary_unary  # type: ignore[assignment]
                assert composed is not None
            return await composed(request, context)

        return call

    def stream_behavior(self, name: str, behavior: StreamBehavior, door: str) -> StreamBehavior:
        """As :meth:`unary_behavior`, for a method whose response streams."""
        composed: StreamBehavior | None = None

        async def call(request: Any, context: Context) -> AsyncIterator[Any]:
            nonlocal composed
            if composed is None:
                handler = grpc.unary_stream_rpc_method_handler(behavior)
                composed = (await self.compose(name, handler, door)).unary_stream  # type: ignore[assignment]
                assert composed is not None
            async for response in composed(request, context):
                yield response

        return call


def _returning(handler: Handler) -> Continuation:
    async def continuation(_details: grpc.HandlerCallDetails) -> Handler:
        return handler

    return continuation


def _normalized(name: str, handler: Handler) -> Handler:
    """``handler`` with a tolerant deserializer (for a request of one message) and, for a
    streamed answer, an async generator as its behavior."""
    streaming_in = bool(handler.request_streaming)
    deserializer = handler.request_deserializer
    if deserializer is not None and not streaming_in:
        # A streamed request's messages reach the servicer itself (reflection, grpc's
        # own): they keep grpc's handling.
        deserializer = tolerant(deserializer, Method.of_handler(name, handler).request_type)
    serializer = handler.response_serializer
    # grpc's stubs type the behaviors for the synchronous server: these are the aio ones.
    behavior: Any
    if handler.response_streaming:
        if streaming_in:
            behavior = as_generator(handler.stream_stream)  # type: ignore[arg-type]
            return grpc.stream_stream_rpc_method_handler(behavior, deserializer, serializer)
        behavior = as_generator(handler.unary_stream)  # type: ignore[arg-type]
        return grpc.unary_stream_rpc_method_handler(behavior, deserializer, serializer)
    if streaming_in:
        behavior = handler.stream_unary
        return grpc.stream_unary_rpc_method_handler(behavior, deserializer, serializer)
    behavior = handler.unary_unary
    return grpc.unary_unary_rpc_method_handler(behavior, deserializer, serializer)


def as_generator(behavior: Callable[[Any, Context], Any]) -> StreamBehavior:
    """A streaming behavior as an async generator: grpc also allows coroutines that write
    with ``context.write`` (health's Watch), which the layers could not iterate."""
    if inspect.isasyncgenfunction(behavior):
        return behavior

    async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
        result = behavior(request, context)
        if inspect.isawaitable(result):
            await result
            return
        async for response in result:
            yield response

    return generator
