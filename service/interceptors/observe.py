"""Sees every call end: its final status (including refusals by later layers), latency, time
to first token, target and tokens, and hands one :class:`CallRecord` to each sink (metrics,
the call log).

It sits outside auth and rate limiting so refused calls are observed too. The final status is
read from the servicer context after ``context.abort`` (which every refusal and error goes
through, via :mod:`service.api.errors`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import grpc

from service import context as call_context
from service.errors import SwitchboardError
from service.interceptors.base import Context, Method, StreamBehavior, UnaryBehavior

INVOKE_RESPONSE = "switchboard.v1.InvokeResponse"
STREAM_RESPONSE = "switchboard.v1.StreamResponse"


class CallRecord:
    """The facts of one call, filled in as it runs; read by sinks when it ends."""

    __slots__ = (
        "agent",
        "code",
        "duration_s",
        "first_token_s",
        "guards",
        "input_tokens",
        "key_id",
        "method",
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

    def see_invoke(self, response: Any) -> None:
        self.target = response.target.name
        self.input_tokens = response.usage.input_tokens
        self.output_tokens = response.usage.output_tokens
        self.guards = _verdicts(response.guard_verdicts)

    def see_event(self, event: Any) -> None:
        kind = event.WhichOneof("event")
        if kind in {"text_delta", "tool_call_delta"}:
            if self.first_token_s is None:
                self.first_token_s = time.perf_counter() - self.started
        elif kind == "start":
            self.target = event.start.target.name
        elif kind == "usage":
            self.input_tokens = event.usage.input_tokens
            self.output_tokens = event.usage.output_tokens
        elif kind == "finish":
            self.guards = _verdicts(event.finish.guard_verdicts)

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


class ObserveLayer:
    def __init__(self, sinks: Sequence[Sink]) -> None:
        self._sinks = tuple(sinks)

    def _agent_of(self, method: Method) -> Callable[[Any], str]:
        if "agent" in method.request_fields:
            # A body that did not decode (decode.Undecodable) names no agent.
            return lambda request: str(getattr(request, "agent", ""))
        return lambda _request: ""

    def _start(self, method: Method, agent: str) -> CallRecord:
        record = CallRecord(method, agent)
        for sink in self._sinks:
            sink.started(record)
        return record

    def _finish(self, record: CallRecord, code: grpc.StatusCode) -> None:
        record.end(code)
        for sink in self._sinks:
            sink.finished(record)

    def unary(self, method: Method, behavior: UnaryBehavior) -> UnaryBehavior:
        agent_of = self._agent_of(method)
        invoke = method.response_type == INVOKE_RESPONSE

        async def observed(request: Any, context: Context) -> Any:
            record = self._start(method, agent_of(request))
            error: BaseException | None = None
            try:
                response = await behavior(request, context)
                if invoke:
                    record.see_invoke(response)
                return response
            except BaseException as exc:
                error = exc
                record.see_error(exc)
                raise
            finally:
                self._finish(record, final_code(context, error))

        return observed

    def stream(self, method: Method, behavior: StreamBehavior) -> StreamBehavior:
        agent_of = self._agent_of(method)
        events = method.response_type == STREAM_RESPONSE

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            record = self._start(method, agent_of(request))
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    if events:
                        record.see_event(response)
                    yield response
            except BaseException as exc:
                error = exc
                record.see_error(exc)
                raise
            finally:
                self._finish(record, final_code(context, error))

        return observed
