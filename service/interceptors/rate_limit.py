"""Rate limiting, after auth: the tenant and key id are the call's (from its key).

Every call that needs a key takes one request and its estimated tokens from the tenant's and
the key's limits; a streamed answer also holds a stream slot until it ends. After the call
the estimate is replaced by the usage the answer reported. Refusals are RESOURCE_EXHAUSTED
with RetryInfo and QuotaFailure, mapped by :mod:`service.api.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from service import context as call_context
from service.api.errors import abort
from service.auth.policy import AuthPolicy
from service.errors import SwitchboardError
from service.interceptors.base import Context, Method, StreamBehavior, UnaryBehavior, text_fields
from service.interceptors.observe import INVOKE_RESPONSE, STREAM_RESPONSE
from service.ratelimit import RateLimiter, Ticket, estimate_tokens

_LEASE_GRACE_S = 5.0


def request_chars(request: Any) -> int:
    """Characters of text in an Invoke/Stream request's messages."""
    return sum(len(part.text) for m in request.messages for part in m.content)


class RateLimitLayer:
    def __init__(
        self,
        limiter: RateLimiter,
        policy: Callable[[], AuthPolicy],
        default_deadline_s: Callable[[], float],
    ) -> None:
        self._limiter = limiter
        self._policy = policy
        self._default_deadline_s = default_deadline_s

    def _exempt(self, method: Method) -> bool:
        # Asked per call: the exempt methods come from the auth config, which reloads.
        return self._policy().exempt(method.name)

    async def _acquire(
        self, method: Method, request: Any, context: Context, stream: bool
    ) -> Ticket | None:
        ctx = call_context.current()
        tokens = estimate_tokens(request_chars(request)) if text_fields(method) else 0
        remaining: float | None = context.time_remaining()
        default = self._default_deadline_s()
        lease_s = (default if remaining is None else remaining) + _LEASE_GRACE_S
        try:
            return await self._limiter.acquire(
                ctx.tenant, ctx.key_id, tokens, stream=stream, lease_s=lease_s
            )
        except SwitchboardError as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises

    def unary(self, method: Method, behavior: UnaryBehavior) -> UnaryBehavior:
        if not self._limiter.active:
            return behavior
        invoke = method.response_type == INVOKE_RESPONSE

        async def limited(request: Any, context: Context) -> Any:
            if self._exempt(method):
                return await behavior(request, context)
            ticket = await self._acquire(method, request, context, stream=False)
            if ticket is None:
                return await behavior(request, context)
            used: int | None = None
            try:
                response = await behavior(request, context)
                if invoke:
                    used = response.usage.input_tokens + response.usage.output_tokens
                return response
            finally:
                await self._limiter.finish(ticket, used)

        return limited

    def stream(self, method: Method, behavior: StreamBehavior) -> StreamBehavior:
        if not self._limiter.active:
            return behavior
        events = method.response_type == STREAM_RESPONSE
        holds_slot = text_fields(method)

        async def limited(request: Any, context: Context) -> AsyncIterator[Any]:
            ticket = (
                None
                if self._exempt(method)
                else await self._acquire(method, request, context, stream=holds_slot)
            )
            if ticket is None:
                async for response in behavior(request, context):
                    yield response
                return
            used: int | None = None
            try:
                async for response in behavior(request, context):
                    if events and response.WhichOneof("event") == "usage":
                        used = response.usage.input_tokens + response.usage.output_tokens
                    yield response
            finally:
                await self._limiter.finish(ticket, used)

        return limited
