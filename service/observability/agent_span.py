"""The ``invoke_agent`` span: one per agent call, around its model calls.

Follows the OpenTelemetry GenAI agent-span conventions (the internal kind: the agent runs in
this process), https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/:
named ``invoke_agent {gen_ai.agent.name}``, with ``gen_ai.operation.name`` =
``invoke_agent``, ``gen_ai.agent.name``, ``gen_ai.agent.version`` and
``gen_ai.agent.description`` when configured, ``gen_ai.conversation.id`` (the session), and,
from the answer, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model``, ``server.address``/``server.port`` of the answering target,
``gen_ai.response.id`` (the call's request id: the id of the agent's answer, which the caller
sees), ``gen_ai.response.finish_reasons``, the usage with its cache reads and writes, and
``switchboard.attempts``, ``switchboard.cache_hit``, ``switchboard.target``. A failure sets
``error.type`` and an ERROR status.

The span is current while the agent's events are being produced (and only then: never across
a yield to the caller), so each model call's span (:mod:`.traced_provider`), retries,
fallbacks, hedges and the tool loop's steps included, is its child.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from service.agents.spec import AgentSpec
from service.domain import AgentRequest, Event, Finish, Start, TargetRef, UsageEvent
from service.errors import SwitchboardError
from service.observability.traced_provider import server_address, usage_attributes

OPERATION = "invoke_agent"


_CACHED = 1024  # agents (and targets) whose attributes are kept; a reload makes new ones


class AgentSpans:
    """Makes the ``invoke_agent`` span of each call with ``tracer``. An agent's attributes
    (and those of each target that answers it) are made once, not per call."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._agents: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
        self._targets: dict[tuple[TargetRef, str | None, str], dict[str, Any]] = {}

    def _agent(self, agent: AgentSpec) -> tuple[str, dict[str, Any]]:
        """The span's name and the agent's attributes (shared: never changed)."""
        key = (agent.name, agent.version, agent.description)
        made = self._agents.get(key)
        if made is None:
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": OPERATION,
                "gen_ai.agent.name": agent.name,
            }
            if agent.version:
                attributes["gen_ai.agent.version"] = agent.version
            if agent.description:
                attributes["gen_ai.agent.description"] = agent.description
            made = f"{OPERATION} {agent.name}", attributes
            if len(self._agents) >= _CACHED:
                self._agents.clear()
            self._agents[key] = made
        return made

    def traced(
        self, agent: AgentSpec, request: AgentRequest, events: AsyncGenerator[Event, None]
    ) -> AsyncGenerator[Event, None]:
        """``events`` unchanged, read inside the span; raises what they raise, and closes
        them when closed. A span not sampled costs nothing per event: ``events`` are
        returned as they are (their model-call spans are not sampled either)."""
        name, attributes = self._agent(agent)
        if request.session_id:
            attributes = {**attributes, "gen_ai.conversation.id": request.session_id}
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        if not span.is_recording():
            span.end()
            return events
        return _within(span, agent, events, self._target)

    def _target(self, agent: AgentSpec, ref: TargetRef) -> dict[str, Any]:
        """The answering target's attributes: provider, model, name, and the address of
        the route's target of that name (shared: never changed)."""
        spec = next((t for t in agent.route if t.name == ref.name), None)
        key = (ref, spec.base_url if spec is not None else None, spec.provider if spec else "")
        made = self._targets.get(key)
        if made is None:
            made = {
                "gen_ai.provider.name": ref.provider,
                "gen_ai.request.model": ref.model,
                "switchboard.target": ref.name,
            }
            address = server_address(spec) if spec is not None else None
            if address is not None:
                made["server.address"], made["server.port"] = address
            if len(self._targets) >= _CACHED:
                self._targets.clear()
            self._targets[key] = made
        return made


async def _within(
    span: Span,
    agent: AgentSpec,
    events: AsyncGenerator[Event, None],
    target: Callable[[AgentSpec, TargetRef], Mapping[str, Any]],
) -> AsyncGenerator[Event, None]:
    """``events``, each produced with ``span`` current; ``span`` ended with them.
    ``target(agent, ref)``: the attributes of the target that answers."""
    current = trace.set_span_in_context(span)
    try:
        async with aclosing(events):
            while True:
                # Current only for this step: a yield hands control to the caller, whose
                # context must not see this span.
                token = otel_context.attach(current)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                finally:
                    otel_context.detach(token)
                if isinstance(event, Start):
                    span.set_attributes(target(agent, event.target))
                    span.set_attribute("gen_ai.response.id", event.request_id)
                else:
                    _see(span, event)
                yield event
    except SwitchboardError as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR, exc.message))
        raise
    except (asyncio.CancelledError, GeneratorExit):
        raise  # the caller left: not the agent's failure
    except Exception as exc:
        span.set_attribute("error.type", type(exc).__name__)
        span.set_status(Status(StatusCode.ERROR))
        raise
    finally:
        span.end()


def _see(span: Span, event: Event) -> None:
    if isinstance(event, UsageEvent) and not event.partial:
        usage_attributes(span, event.usage)
    elif isinstance(event, Finish):
        span.set_attribute("gen_ai.response.finish_reasons", [event.reason.value])
        span.set_attribute("switchboard.attempts", event.attempts)
        span.set_attribute("switchboard.cache_hit", event.cache_hit)
        if event.target is not None:
            span.set_attribute("gen_ai.response.model", event.target.model)
