"""A Provider wrapper that records each model call: a span following the OpenTelemetry GenAI
semantic conventions, and the upstream metrics (calls by target and outcome, duration).

Applied to every provider in app.py, so the router and the providers stay unaware of it. The
span is a child of the span current when the call starts (the server span) and is never made
current itself, so nothing leaks across the generator's suspensions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.deadline import Deadline
from service.domain import Finish, ProviderEvent, Usage, UsageEvent
from service.errors import SwitchboardError
from service.observability.metrics import Metrics
from service.providers.base import ModelCall, Provider, TargetSpec
from service.watchdog import expired_kind

OPERATION = "chat"
# Where the SDKs go when a target names no base_url (service/providers/*).
DEFAULT_HOSTS = {"openai": ("api.openai.com", 443), "anthropic": ("api.anthropic.com", 443)}


def server_address(target: TargetSpec) -> tuple[str, int] | None:
    """The host and port ``target`` calls (None for the in-process mock)."""
    if target.base_url:
        url = urlsplit(target.base_url)
        if url.hostname:
            return url.hostname, url.port or (443 if url.scheme == "https" else 80)
    return DEFAULT_HOSTS.get(target.provider)


class TracedProvider:
    def __init__(
        self, inner: Provider, target: TargetSpec, tracer: trace.Tracer, metrics: Metrics
    ) -> None:
        self.inner = inner
        self._target = target
        self._tracer = tracer
        self._name = f"{OPERATION} {target.model}"
        self._attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": target.provider,
            "gen_ai.system": target.provider,
            "gen_ai.request.model": target.model,
            "switchboard.target": target.name,
        }
        if (address := server_address(target)) is not None:
            self._attributes["server.address"], self._attributes["server.port"] = address
        self._calls = {
            outcome: metrics.upstream_calls.labels(target.name, outcome)
            for outcome in ("ok", "cancelled")
        }
        self._metrics = metrics
        self._seconds = metrics.upstream_seconds.labels(target.name)

    def _request_attributes(self, call: ModelCall) -> dict[str, Any]:
        attributes = dict(self._attributes)
        p = call.parameters
        if p.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = p.max_tokens
        if p.temperature is not None:
            attributes["gen_ai.request.temperature"] = p.temperature
        if p.top_p is not None:
            attributes["gen_ai.request.top_p"] = p.top_p
        return attributes

    async def stream(
        self, call: ModelCall, deadline: Deadline
    ) -> AsyncGenerator[ProviderEvent, None]:
        """The inner provider's events, unchanged; raises what it raises."""
        span = self._tracer.start_span(
            self._name, kind=SpanKind.CLIENT, attributes=self._request_attributes(call)
        )
        started = time.perf_counter()
        outcome = "ok"
        finished = False
        try:
            events = self.inner.stream(call, deadline)
            try:  # as aclosing would, without the object held (docs/benchmarks.md, Memory)
                async for event in events:
                    if isinstance(event, UsageEvent) and not event.partial:
                        usage_attributes(span, event.usage)
                    elif isinstance(event, Finish):
                        span.set_attribute("gen_ai.response.model", self._target.model)
                        span.set_attribute("gen_ai.response.finish_reasons", [event.reason.value])
                        if event.response_id:
                            span.set_attribute("gen_ai.response.id", event.response_id)
                        finished = True
                    yield event
            finally:
                await events.aclose()
        except SwitchboardError as exc:
            outcome = type(exc).__name__
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, exc.message))
            raise
        except asyncio.CancelledError as exc:
            # Closed after its Finish is a normal end; before it, the caller gave up, or the
            # router's first-token or idle timeout cancelled the read (it says which).
            outcome = "ok" if finished else expired_kind(exc) or "cancelled"
            if outcome not in {"ok", "cancelled"}:
                span.set_attribute("error.type", outcome)
                span.set_status(Status(StatusCode.ERROR, outcome))
            raise
        except GeneratorExit:
            outcome = "ok" if finished else "cancelled"
            raise
        except Exception as exc:
            outcome = type(exc).__name__
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            span.end()
            self._seconds.observe(time.perf_counter() - started)
            counter = self._calls.get(outcome)
            if counter is None:
                counter = self._metrics.upstream_calls.labels(self._target.name, outcome)
            counter.inc()

    async def aclose(self) -> None:
        await self.inner.aclose()


def usage_attributes(span: Span, usage: Usage) -> None:
    """OpenTelemetry GenAI usage attributes; the parts (cache reads and writes, reasoning)
    and Switchboard's estimated flag only when the provider reported them."""
    span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
    parts = {
        "gen_ai.usage.cache_read.input_tokens": usage.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_creation_input_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
    }
    for name, count in parts.items():
        if count:
            span.set_attribute(name, count)
    if usage.estimated:
        span.set_attribute("switchboard.usage.estimated", True)
