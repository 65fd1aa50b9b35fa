"""What every layer of the chain is: a grpc-interceptor ``AsyncServerInterceptor``.

Each layer implements grpc-interceptor's ``intercept(method, request, context, method_name)``
through two wrappers, :meth:`Layer.unary` for a method answering one message and
:meth:`Layer.stream` for one whose answer streams, and can be installed alone on a
``grpc.aio`` server. grpc-interceptor's ``intercept_service`` builds a new method handler for
every call; :class:`~service.interceptors.chain.Chain` asks it once per method instead and
keeps the result, so a call costs the layers' own work and no handler building. A layer may
also say it does not apply to a method (:meth:`Layer.applies`, asked once per method): it
then adds nothing to that method's calls.

The handler a layer builds calls :meth:`Layer.unary` or :meth:`Layer.stream` itself, not
through grpc-interceptor's per-call wrapper (a coroutine or an async generator that calls
``intercept``, another coroutine): those were two frames per layer per call, and for a
Stream held open, about 800 bytes a layer for its whole life. A layer that only checks
before passing a call on (decode, auth) may return the next layer's awaitable or iterator
from a plain ``def``, adding no frame of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pool
from grpc_interceptor import AsyncServerInterceptor

if TYPE_CHECKING:  # generic only in the stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


DOORS = ("grpc", "grpc_web", "connect", "openai", "anthropic")
"""The doors a call can come through: the ``door`` label of the call metrics, the call log's
``door`` field and the span's ``switchboard.door`` attribute."""


@dataclass(frozen=True, slots=True)
class Method:
    """Facts about one RPC method, computed once when it is first called."""

    name: str  # "/package.Service/Method"
    service: str
    short_name: str
    request_streaming: bool
    response_streaming: bool
    request_fields: frozenset[str]  # empty when the request streams or is unknown
    response_type: str  # full protobuf name, "" when unknown
    request_type: str = ""  # full protobuf name, "" when unknown
    door: str = "grpc"  # the door the call came through: one of DOORS
    # ``package.Service/Method``: the RPC conventions' span name, the metrics' label.
    rpc: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rpc", f"{self.service}/{self.short_name}")

    @classmethod
    def of(
        cls, name: str, request_streaming: bool, response_streaming: bool, door: str = "grpc"
    ) -> Method:
        service, _, short = name.lstrip("/").partition("/")
        fields: frozenset[str] = frozenset()
        response_type = request_type = ""
        try:
            descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{short}")
        except KeyError:
            descriptor = None
        if descriptor is not None:
            response_type = descriptor.output_type.full_name
            request_type = descriptor.input_type.full_name
            if not request_streaming:
                fields = frozenset(descriptor.input_type.fields_by_name)
        return cls(
            name=name,
            service=service,
            short_name=short,
            request_streaming=request_streaming,
            response_streaming=response_streaming,
            request_fields=fields,
            response_type=response_type,
            request_type=request_type,
            door=door,
        )

    @classmethod
    def of_handler(cls, name: str, handler: Handler, door: str = "grpc") -> Method:
        streams = bool(handler.request_streaming), bool(handler.response_streaming)
        return cls.of(name, *streams, door=door)


class MethodName(str):
    """A method's full name ("/package.Service/Method") that also carries its
    :class:`Method` (the door included): what the chain hands the interceptors as
    ``HandlerCallDetails.method``, and grpc-interceptor hands each layer's ``intercept`` as
    ``method_name``. The same method is composed once per door, so the facts cannot be
    looked up by name alone."""

    facts: Method

    def __new__(cls, facts: Method) -> MethodName:
        named = super().__new__(cls, facts.name)
        named.facts = facts
        return named


class Layer(AsyncServerInterceptor):
    """One interceptor of the chain (see the module docstring). Subclasses implement
    :meth:`unary` and :meth:`stream`, and may narrow :meth:`applies`."""

    def __init__(self) -> None:
        # For a layer installed alone on a grpc server, which hands it plain names.
        self._methods: dict[str, Method] = {}

    def applies(self, method: Method) -> bool:
        """Whether this layer wraps ``method`` at all (asked once per method)."""
        return True

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        """grpc-interceptor's, for the methods this layer applies to; the next handler
        unchanged for the others."""
        handler: Handler | None = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[return-value] # unknown method: UNIMPLEMENTED
        name: str = handler_call_details.method
        if isinstance(name, MethodName):
            method = name.facts
        else:
            method = self._methods.get(name) or Method.of_handler(name, handler)
            self._methods[name] = method
        if not self.applies(method):
            return handler
        wrapped = self.wrap(method, handler)
        # Inside the chain the next layer out calls this one directly; a handler grpc
        # calls must have behaviors grpc recognises (the chain makes its outermost so).
        return wrapped if isinstance(name, MethodName) else callable_by_grpc(wrapped)

    def wrap(self, method: Method, handler: Handler) -> Handler:
        """``handler`` of ``method`` inside this layer: its behavior is :meth:`unary` or
        :meth:`stream` bound to the next behavior (grpc-interceptor's handler, without its
        per-call wrapper). The behavior may be a plain function returning an awaitable or
        an async iterator: see :func:`callable_by_grpc`."""
        # Over the class's function, not the bound method: grpc asks whether the outermost
        # behavior is a coroutine function on every call, and inspect answers that about
        # twice as fast for a partial of a function.
        if handler.response_streaming:
            inner: Any = handler.unary_stream or handler.stream_stream
            return _handler(handler, partial(type(self).stream, self, method, inner))
        inner = handler.unary_unary or handler.stream_unary
        return _handler(handler, partial(type(self).unary, self, method, inner))

    async def intercept(
        self,
        method: Callable[[Any, Context], Any],
        request_or_iterator: Any,
        context: Context,
        method_name: str,
    ) -> Any:
        """grpc-interceptor's per-call entry: :meth:`unary` awaited, or :meth:`stream`'s
        generator, which grpc-interceptor iterates."""
        facts = (
            method_name.facts if isinstance(method_name, MethodName) else self._methods[method_name]
        )
        if facts.response_streaming:
            return self.stream(facts, method, request_or_iterator, context)
        return await self.unary(facts, method, request_or_iterator, context)

    def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Awaitable[Any]:
        """One call of a method answering one message; ``call`` runs the rest of the chain."""
        return call(request, context)

    def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        """One call of a method whose answer streams; ``call`` runs the rest of the chain."""
        return call(request, context)


def text_fields(method: Method) -> bool:
    """True when the method's request carries ``agent`` and ``messages`` (Invoke, Stream)."""
    return {"agent", "messages"} <= method.request_fields


def callable_by_grpc(handler: Handler) -> Handler:
    """``handler`` with a behavior grpc.aio runs as asynchronous: a coroutine function (one
    answer) or an async generator function (a stream). grpc runs any other function in its
    thread pool, expecting a synchronous answer."""
    behavior: Any = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    if handler.response_streaming:
        if inspect.isasyncgenfunction(behavior):
            return handler
        return _handler(handler, partial(_iterated, behavior))
    if inspect.iscoroutinefunction(behavior):
        return handler
    return _handler(handler, partial(_awaited, behavior))


def _handler(like: Handler, behavior: Any) -> Handler:
    """A handler of the same kind and (de)serializers as ``like``, running ``behavior``."""
    # grpc's stubs type the behaviors for the synchronous server: these are the aio ones.
    factory: Any
    if like.response_streaming:
        factory = (
            grpc.stream_stream_rpc_method_handler
            if like.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
    else:
        factory = (
            grpc.stream_unary_rpc_method_handler
            if like.request_streaming
            else grpc.unary_unary_rpc_method_handler
        )
    built: Handler = factory(
        behavior,
        request_deserializer=like.request_deserializer,
        response_serializer=like.response_serializer,
    )
    return built


async def _awaited(
    unary: Callable[[Any, Context], Awaitable[Any]], request: Any, context: Context
) -> Any:
    return await unary(request, context)


async def _iterated(stream: StreamBehavior, request: Any, context: Context) -> AsyncIterator[Any]:
    async for response in stream(request, context):
        yield response
