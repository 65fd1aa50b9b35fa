"""Request bodies that do not decode: INVALID_ARGUMENT before auth, counted and logged.

grpc runs a handler's ``request_deserializer`` before any interceptor sees the call, and an
exception there becomes UNKNOWN "Unexpected <class 'DecodeError'>" with a traceback in the
log. :func:`tolerant` wraps the deserializer so that a body that does not parse (a truncated
varint, wire type 6 or 7, bad UTF-8 in a string, a length past the end, nesting past
protobuf's recursion limit…) becomes an :class:`Undecodable` marker instead; the chain's
outer layers (tracing, context, observe) treat it as a request without fields, and
:class:`DecodeLayer`, placed before auth, ends the call with INVALID_ARGUMENT. So the call
is traced, counted in the metrics and written to the call log like any other refusal, and
one unauthenticated byte costs one log line, not a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from google.protobuf.message import DecodeError

from service.api.errors import abort
from service.errors import InvalidArgument
from service.interceptors.base import Context, Layer, Method, StreamBehavior, UnaryBehavior

Deserializer = Callable[[bytes], Any]


class Undecodable:
    """What a tolerant deserializer returns for a body that does not decode (and what an
    HTTP door passes down the chain for a body it cannot turn into the request message:
    then ``field`` may name the bad field, in the door's own terms)."""

    __slots__ = ("field", "problem", "size")

    def __init__(self, problem: str, size: int, field: str = "") -> None:
        self.problem = problem  # protobuf's own words, without the body
        self.size = size  # bytes received
        self.field = field  # the field at fault, when known


def tolerant(deserializer: Deserializer, type_name: str) -> Deserializer:
    """``deserializer``, returning :class:`Undecodable` where it would raise ``DecodeError``
    (or ``RecursionError``/``ValueError``, which some protobuf runtimes raise instead)."""

    def deserialize(body: bytes) -> Any:
        try:
            return deserializer(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            return Undecodable(_problem(exc, type_name), len(body))

    return deserialize


def _problem(exc: BaseException, type_name: str) -> str:
    detail = str(exc).rpartition(": ")[2] if isinstance(exc, DecodeError) else ""
    if "MaxDepth" in detail or isinstance(exc, RecursionError):
        detail = "messages nested too deeply (a Struct such as a tool schema counts 3 a level)"
    what = f"the request body is not a valid {type_name or 'message'}"
    # upb's words ("Wire format was corrupt", "String field had bad UTF-8") are short and
    # name no input; anything longer is not echoed.
    return f"{what}: {detail}" if detail and len(detail) <= 100 else what


def problem_of(request: Any) -> str | None:
    """Why ``request`` did not decode, or None when it did."""
    return request.problem if isinstance(request, Undecodable) else None


def _refusal(request: Undecodable) -> InvalidArgument:
    if request.field:
        return InvalidArgument.field(request.field, request.problem)
    return InvalidArgument(request.problem)


class DecodeLayer(Layer):
    """Ends a call whose body did not decode with INVALID_ARGUMENT (BadRequest only when a
    door named the field: protobuf's errors name none)."""

    def applies(self, method: Method) -> bool:
        return not method.request_streaming  # a streamed request keeps grpc's handling

    # Plain functions: a call that decoded goes on with no frame of this layer's.
    def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Awaitable[Any]:
        if isinstance(request, Undecodable):
            return abort(context, _refusal(request))
        return call(request, context)

    def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            return _refused(context, request)
        return call(request, context)


async def _refused(context: Context, request: Undecodable) -> AsyncIterator[Any]:
    await abort(context, _refusal(request))
    yield  # unreachable: abort raises; makes this an async generator
