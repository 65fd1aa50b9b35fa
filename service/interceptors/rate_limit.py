"""Rate limiting, after auth: the tenant and key id are the call's (from its key).

Every call that needs a key takes one request and an upper bound of its tokens
(:func:`token_bound`) from the tenant's and the key's limits, and the bound of a session's
history once the pipeline has loaded it (through the call's meter); a streamed answer also
holds a stream slot until it ends. After the call the bound is replaced by what the call was charged
(the pipeline's meter: the usage the upstream reported, or an estimate for a call cut short).
Refusals are RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure, mapped by
:mod:`service.api.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from service import context as call_context
from service.api.errors import abort
from service.auth.policy import AuthPolicy
from service.errors import SwitchboardError
from service.interceptors.base import (
    Context,
    Layer,
    Method,
    StreamBehavior,
    UnaryBehavior,
    text_fields,
)
from service.interceptors.observe import INVOKE_RESPONSE, STREAM_RESPONSE
from service.ratelimit import RateLimiter, Ticket
from service.usage.bound import call_bound
from service.usage.meter import Meter, open_meter

if TYPE_CHECKING:
    from service.agents.spec import AgentSpec

_LEASE_GRACE_S = 5.0


def request_chars(request: Any) -> int:
    """Characters of text in an Invoke/Stream request's messages."""
    return sum(len(part.text) for m in request.messages for part in m.content)


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def token_bound(request: Any, agent: AgentSpec | None) -> int:
    """An upper bound of an Invoke/Stream request's tokens, in and out
    (:func:`service.usage.bound.call_bound`): what the tokens-per-minute limits reserve."""
    text = images = 0
    for message in request.messages:
        for part in message.content:
            if part.WhichOneof("part") == "text":
                text += _bytes(part.text)
            else:
                images += 1
        for call in message.tool_calls:
            text += _bytes(call.id) + _bytes(call.name) + _bytes(call.arguments_json)
        text += _bytes(message.tool_call_id)
    # The caller's tools are offered to the model too (their schema as JSON, about as long).
    text += sum(t.ByteSize() for t in request.tools)
    parameters = request.parameters
    max_tokens = parameters.max_tokens if parameters.HasField("max_tokens") else None
    return call_bound(agent, text, len(request.messages), images, max_tokens)


def _charged(meter: Meter, reported: int | None) -> int | None:
    """The call's charged tokens: the pipeline's figure (set on every exit path, estimated
    for a call cut short), else the usage the answer reported."""
    return meter.tokens if meter.tokens is not None else reported


class RateLimitLayer(Layer):
    def __init__(
        self,
        limiter: RateLimiter,
        policy: Callable[[], AuthPolicy],
        default_deadline_s: Callable[[], float],
        agent: Callable[[str], AgentSpec | None] = lambda _name: None,
    ) -> None:
        """``agent(name)``: the named agent of the current config, or None (for the token
        bound of a request)."""
        super().__init__()
        self._limiter = limiter
        self._policy = policy
        self._default_deadline_s = default_deadline_s
        self._agent = agent

    def applies(self, method: Method) -> bool:
        return self._limiter.active

    def _exempt(self, method: Method) -> bool:
        # Asked per call: the exempt methods come from the auth config, which reloads.
        return self._policy().exempt(method.name)

    async def _acquire(
        self, method: Method, request: Any, context: Context, stream: bool
    ) -> Ticket | None:
        ctx = call_context.current()
        tokens = token_bound(request, self._agent(request.agent)) if text_fields(method) else 0
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

    def _extender(self, ticket: Ticket) -> Callable[[int], Awaitable[None]] | None:
        """How the pipeline reserves what a call sends beyond its request (its history)."""
        if not ticket.token_rates:
            return None
        return lambda tokens: self._limiter.extend(ticket, tokens)

    async def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        if self._exempt(method):
            return await call(request, context)
        ticket = await self._acquire(method, request, context, stream=False)
        if ticket is None:
            return await call(request, context)
        used: int | None = None
        meter = open_meter(self._extender(ticket))
        try:
            response = await call(request, context)
            if method.response_type == INVOKE_RESPONSE:
                used = response.usage.input_tokens + response.usage.output_tokens
            return response
        finally:
            # What the call was charged, however it ended (a cancelled call too).
            await self._limiter.finish(ticket, _charged(meter, used))

    async def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        ticket = (
            None
            if self._exempt(method)
            else await self._acquire(method, request, context, stream=text_fields(method))
        )
        if ticket is None:
            async for response in call(request, context):
                yield response
            return
        events = method.response_type == STREAM_RESPONSE
        used: int | None = None
        meter = open_meter(self._extender(ticket))
        try:
            async for response in call(request, context):
                if events and response.WhichOneof("event") == "usage":
                    used = response.usage.input_tokens + response.usage.output_tokens
                yield response
        finally:
            await self._limiter.finish(ticket, _charged(meter, used))
