"""The first layer: gives the call its :class:`~service.context.CallContext`.

The request id is the caller's (the request's ``request_id`` field, else the ``x-request-id``
header, whichever is well formed: see :func:`service.context.request_id_problem`) or a new
one. A malformed ``request_id`` field is never bound here; the servicer rejects the call.
The trace is the server span the tracing interceptor opened, which is current here; the call
log reads its ids from it. This layer owns the
context's scope: it resets it when the call ends, whatever later layers bound.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from service import context as call_context
from service.interceptors.base import Context, Method, StreamBehavior, UnaryBehavior

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


class ContextLayer:
    def _request_id(self, method: Method) -> Callable[[Any, Context], str]:
        if "request_id" in method.request_fields:
            # The servicer uses the request's own id first; the log must agree with it.
            return lambda request, context: _own_request_id(request) or request_id_of(context)
        return lambda _request, context: request_id_of(context)

    def unary(self, method: Method, behavior: UnaryBehavior) -> UnaryBehavior:
        request_id = self._request_id(method)

        async def with_context(request: Any, context: Context) -> Any:
            token = call_context.bind(call_context.CallContext(request_id(request, context)))
            try:
                return await behavior(request, context)
            finally:
                call_context.reset(token)

        return with_context

    def stream(self, method: Method, behavior: StreamBehavior) -> StreamBehavior:
        request_id = self._request_id(method)

        async def with_context(request: Any, context: Context) -> AsyncIterator[Any]:
            token = call_context.bind(call_context.CallContext(request_id(request, context)))
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                call_context.reset(token)

        return with_context
