"""Sees every call end: its final status (including refusals by later layers), latency, time
to first token, target and tokens, and hands one :class:`CallRecord` to each sink (metrics,
the call log).

It sits outside auth and rate limiting so refused calls are observed too. The final status is
read from the servicer context after ``context.abort`` (which every refusal and error goes
through, via :mod:`service.api.errors`). Health checks and server reflection are not agent
calls: only the sinks that see every call (the server span's) see them, not the metrics or
the call log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc

from service import context as call_context
from service.config.chain_model import HEALTH_PREFIX, REFLECTION_PREFIXES
from service.errors import SwitchboardError
from service.interceptors.base import (
    Context,
    Handler,
    Layer,
    Method,
    StreamBehavior,
    UnaryBehavior,
)

INVOKE_RESPONSE = "switchboard.v1.InvokeResponse"
STREAM_RESPONSE = "switchboard.v1.StreamResponse"
NOT_OBSERVED = (HEALTH_PREFIX, *REFLECTION_PREFIXES)


class CallRecord:
    """The facts of one call, filled in as it runs; read by sinks when it ends."""

    __slots__ = (
        "agent",
        "agent_version",
        "attempts",
        "cache_hit",
        "cached_input_tokens",
        "code",
        "cost_usd",
        "duration_s",
        "first_token_s",
        "guards",
        "input_tokens",
        "key_id",
        "method",
        "model",
        "output_tokens",
        "reason",
        "request_id",
        "started",
        "target",
        "tenant",
    )

    def __init__(self, method: Method, agent: str) -> None:
        self.method = method
        self.agent = agent
        self.started = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.duration_s = 0.0
        self.first_token_s: float | None = None
        self.target = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.request_id = ""
        self.tenant = ""
        self.key_id = ""
        self.reason = ""  # the ErrorInfo reason of a failed call
        self.guards: tuple[str, ...] = ()  # guard verdicts: "guard:stage:category:action:count"
        self.agent_version = ""
        self.model = ""  # the answering target's model
        self.cost_usd = 0.0  # as the answer reported it
        self.cached_input_tokens = 0
        self.cache_hit = False
        self.attempts = 0  # upstream attempts, as the answer reported them (0: none known)

    def see_invoke(self, response: Any) -> None:
        self.agent_version = response.agent_version
        self._see_target(response.target)
        self._see_usage(response.usage)
        self.attempts = response.attempts
        self.cache_hit = response.cache_hit
        self.guards = _verdicts(response.guard_verdicts)

    def see_event(self, event: Any) -> None:
        kind = event.WhichOneof("event")
        if kind in {"text_delta", "tool_call_delta"}:
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.started
        elif kind == "start":
            self.agent_version = event.start.agent_version
            self._see_target(event.start.target)
        elif kind == "usage":
            self._see_usage(event.usage)
        elif kind == "finish":
            finish = event.finish
            if finish.target.name:
                self._see_target(finish.target)
            self.attempts = finish.attempts
            self.cache_hit = finish.cache_hit
            self.guards = _verdicts(finish.guard_verdicts)

    def _see_target(self, target: Any) -> None:
        self.target = target.name
        self.model = target.model

    def _see_usage(self, usage: Any) -> None:
        self.input_tokens = usage.input_tokens
        self.output_tokens = usage.output_tokens
        self.cached_input_tokens = usage.cached_input_tokens
        self.cost_usd = usage.cost_usd

    def see_error(self, error: BaseException | None) -> None:
        """Take the reason (and the target, when no answer named one) of the error that
        ended the call: :func:`service.api.errors.abort` raises grpc's AbortError from it."""
        cause = error.__cause__ if isinstance(error, grpc.aio.AbortError) else None
        if isinstance(cause, SwitchboardError):
            self.reason = str(cause.reason)
            self.target = self.target or cause.metadata.get("target", "")
            if "guard" in cause.metadata:  # a guard blocked the input
                facts = (cause.metadata.get(k, "") for k in ("guard", "stage", "category"))
                self.guards = (":".join((*facts, "block", "1")),)
        elif cause is not None:
            self.reason = "INTERNAL"

    def end(self, code: grpc.StatusCode) -> None:
        self.duration_s = time.perf_counter() - self.started
        self.code = code
        ctx = call_context.current()
        self.request_id = ctx.request_id
        self.tenant = ctx.tenant
        self.key_id = ctx.key_id


def _verdicts(verdicts: Any) -> tuple[str, ...]:
    """Guard verdicts as the call log writes them (never the matched text)."""
    return tuple(f"{v.guard}:{v.stage}:{v.category}:{v.action}:{v.count}" for v in verdicts)


class Sink(Protocol):
    def started(self, record: CallRecord) -> None: ...

    def finished(self, record: CallRecord) -> None: ...


def final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status the caller gets: the aborted code, CANCELLED/DEADLINE_EXCEEDED for a
    cancelled call, UNKNOWN for an exception nothing mapped (a bug)."""
    if error is None or isinstance(error, grpc.aio.AbortError):
        code: grpc.StatusCode | None = context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining: float | None = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _agent_of(method: Method, request: Any) -> str:
    # A body that did not decode (decode.Undecodable) names no agent.
    return str(getattr(request, "agent", "")) if "agent" in method.request_fields else ""


class ObserveLayer(Layer):
    """``sinks`` see the calls of the agent-facing services; ``every_call`` sinks see those
    and health and reflection too."""

    def __init__(self, sinks: Sequence[Sink], every_call: Sequence[Sink] = ()) -> None:
        super().__init__()
        self._sinks = (*sinks, *every_call)
        self._every_call = tuple(every_call)
        # The sinks of each method, by name, made as methods are wrapped.
        self._method_sinks: dict[str, tuple[Sink, ...]] = {}

    def _sinks_of(self, method: Method) -> tuple[Sink, ...]:
        return self._every_call if method.name.startswith(NOT_OBSERVED) else self._sinks

    def wrap(self, method: Method, handler: Handler) -> Handler:
        self._method_sinks[method.name] = self._sinks_of(method)
        return super().wrap(method, handler)

    def _start(self, method: Method, request: Any) -> tuple[CallRecord, tuple[Sink, ...]]:
        record = CallRecord(method, _agent_of(method, request))
        sinks = self._method_sinks.get(method.name)
        if sinks is None:  # not wrapped here (grpc-interceptor's own per-call entry)
            sinks = self._sinks_of(method)
        for sink in sinks:
            sink.started(record)
        return record, sinks

    @staticmethod
    def _finish(record: CallRecord, sinks: tuple[Sink, ...], code: grpc.StatusCode) -> None:
        record.end(code)
        for sink in sinks:
            sink.finished(record)

    async def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        record, sinks = self._start(method, request)
        error: BaseException | None = None
        try:
            response = await call(request, context)
            if method.response_type == INVOKE_RESPONSE:
                record.see_invoke(response)
            return response
        except BaseException as exc:
            error = exc
            record.see_error(exc)
            raise
        finally:
            self._finish(record, sinks, final_code(context, error))

    async def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        record, sinks = self._start(method, request)
        events = method.response_type == STREAM_RESPONSE
        error: BaseException | None = None
        try:
            async for response in call(request, context):
                if events:
                    record.see_event(response)
                yield response
        except BaseException as exc:
            error = exc
            record.see_error(exc)
            raise
        finally:
            self._finish(record, sinks, final_code(context, error))
