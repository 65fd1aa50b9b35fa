"""What every interceptor of the chain is: a :class:`Layer` that wraps a method's behavior.

A layer is asked once per method (not per call) for a wrapper, separately for unary and
streaming responses, and may return the behavior unchanged (an exempt method costs nothing).
:mod:`service.interceptors.chain` composes the layers in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import descriptor_pool

Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


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


class Layer(Protocol):
    """One interceptor. Wrappers are built once per method and called on every call."""

    def unary(self, method: Method, behavior: UnaryBehavior) -> UnaryBehavior:
        """Wrap a method whose response is one message."""
        ...

    def stream(self, method: Method, behavior: StreamBehavior) -> StreamBehavior:
        """Wrap a method whose response streams."""
        ...


def text_fields(method: Method) -> bool:
    """True when the method's request carries ``agent`` and ``messages`` (Invoke, Stream)."""
    return {"agent", "messages"} <= method.request_fields
