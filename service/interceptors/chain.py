"""THE order of the interceptor chain, in one list. Every call passes, outermost first:

1. tracing      the server span (OpenTelemetry RPC conventions), continuing the caller's
                ``traceparent``
2. context      request id → :class:`~service.context.CallContext` (owns its scope)
3. observe      sees the final status of every call, refused ones included, and hands a
                record to the metrics and the call log
4. faults       an exception nothing mapped becomes INTERNAL "internal error", its traceback
                logged once per kind and window (:mod:`service.observability.faults`)
5. decode       a body that did not decode is INVALID_ARGUMENT (before auth: it costs a
                caller nothing to send, so it must cost the server little)
6. auth         API key → tenant, key id, allowed agents (health, open reflection exempt)
7. rate limit   per tenant and per key: requests, tokens, concurrent streams
then the servicer; whether the key may call the named agent is checked where the runner
resolves the agent, so every path that names an agent is covered and ListAgents lists
only the agents the key may call.

Layers are composed once per method (cached), not per call. Every method whose request is
one message gets a tolerant deserializer (:func:`service.interceptors.decode.tolerant`): grpc
runs it before any layer, so a failure there would otherwise escape the chain.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry.trace import TracerProvider

from service.auth.policy import AuthPolicy
from service.interceptors.auth import AuthLayer
from service.interceptors.base import Context, Layer, Method, StreamBehavior, UnaryBehavior
from service.interceptors.context import ContextLayer
from service.interceptors.decode import DecodeLayer, tolerant
from service.interceptors.faults import FaultLayer
from service.interceptors.observe import ObserveLayer, Sink
from service.interceptors.rate_limit import RateLimitLayer
from service.interceptors.tracing import TracingLayer
from service.observability.faults import FaultLog
from service.ratelimit import RateLimiter

if TYPE_CHECKING:  # generic only in the stubs
    from service.agents.spec import AgentSpec

    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


def build_chain(
    *,
    tracer_provider: TracerProvider,
    auth: Callable[[], AuthPolicy],
    limiter: RateLimiter,
    sinks: Sequence[Sink],
    default_deadline_s: Callable[[], float],
    faults: FaultLog,
    agent: Callable[[str], AgentSpec | None] = lambda _name: None,
) -> Chain:
    """The chain, outermost first (see the module docstring). The gRPC server takes it as
    its interceptor; the HTTP doors wrap the same servicer methods with it
    (:meth:`Chain.unary_behavior`, :meth:`Chain.stream_behavior`)."""
    return Chain(
        [
            TracingLayer(tracer_provider),
            ContextLayer(),
            ObserveLayer(sinks),
            FaultLayer(faults),
            DecodeLayer(),
            AuthLayer(auth),
            RateLimitLayer(limiter, auth, default_deadline_s, agent),
        ]
    )


def build_interceptors(
    *,
    tracer_provider: TracerProvider,
    auth: Callable[[], AuthPolicy],
    limiter: RateLimiter,
    sinks: Sequence[Sink],
    default_deadline_s: Callable[[], float],
    faults: FaultLog,
    agent: Callable[[str], AgentSpec | None] = lambda _name: None,
) -> list[Interceptor]:
    """The chain as the gRPC server's interceptor list."""
    return [
        build_chain(
            tracer_provider=tracer_provider,
            auth=auth,
            limiter=limiter,
            sinks=sinks,
            default_deadline_s=default_deadline_s,
            faults=faults,
            agent=agent,
        )
    ]


class Chain(Interceptor):
    """Applies ``layers`` (outermost first) to every method's handler."""

    def __init__(self, layers: Sequence[Layer]) -> None:
        self._layers = tuple(layers)
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
        wrapped = self._wrap(name, handler)
        self._wrapped[name] = (handler, wrapped)
        return wrapped

    def unary_behavior(self, name: str, behavior: UnaryBehavior, door: str) -> UnaryBehavior:
        """``behavior`` (a servicer method answering one message) wrapped in every layer, as
        the gRPC server runs method ``name`` ("/package.Service/Method"): for a door that
        calls the servicer without grpc's transport. ``door`` (one of
        :data:`~service.interceptors.base.DOORS`) labels its metrics, log lines and spans.
        Build it once, call it per request."""
        method = Method.of(name, request_streaming=False, response_streaming=False, door=door)
        for layer in reversed(self._layers):
            behavior = layer.unary(method, behavior)
        return behavior

    def stream_behavior(self, name: str, behavior: StreamBehavior, door: str) -> StreamBehavior:
        """As :meth:`unary_behavior`, for a method whose response streams."""
        method = Method.of(name, request_streaming=False, response_streaming=True, door=door)
        for layer in reversed(self._layers):
            behavior = layer.stream(method, behavior)
        return behavior

    def _wrap(self, name: str, handler: Handler) -> Handler:
        streaming_in = bool(handler.request_streaming)
        method = Method.of(name, streaming_in, bool(handler.response_streaming))
        deserializer = handler.request_deserializer
        if deserializer is not None and not streaming_in:
            # A streamed request's messages reach the servicer itself (reflection, grpc's
            # own): they keep grpc's handling.
            deserializer = tolerant(deserializer, method.request_type)
        if handler.response_streaming:
            inner: Any = handler.stream_stream if streaming_in else handler.unary_stream
            stream = as_generator(inner)
            for layer in reversed(self._layers):
                stream = layer.stream(method, stream)
            make_stream = (
                grpc.stream_stream_rpc_method_handler
                if streaming_in
                else grpc.unary_stream_rpc_method_handler
            )
            return make_stream(
                stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        behavior: Any = handler.stream_unary if streaming_in else handler.unary_unary
        unary: UnaryBehavior = behavior
        for layer in reversed(self._layers):
            unary = layer.unary(method, unary)
        make_unary = (
            grpc.stream_unary_rpc_method_handler
            if streaming_in
            else grpc.unary_unary_rpc_method_handler
        )
        return make_unary(
            unary,
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )


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
