"""Helpers for end-to-end state tests: a config on either backend, served in-process."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator

from switchboard.v1 import session_pb2_grpc, usage_pb2_grpc

from service.agents.runner import Runner
from service.context import CallContext, bind, reset
from service.deadline import Deadline
from service.domain import AgentRequest, AgentResponse, Message, Parameters, Role, TextPart
from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.harness import Served, serve_config

BASE = """
server:
  grace_s: 1
targets:
  mock-echo:
    provider: mock
    model: echo
  mock-compose:
    provider: mock
    model: compose
  mock-slow:
    provider: mock
    model: slow  # composes a reply; unpriced, so budgets never bind it
    mock:
      ttft_s: 0.3
  mock-trickle:
    provider: mock
    model: echo
    mock:
      tokens_per_s: 4
pricing:
  echo: {input_per_mtok: 1000, output_per_mtok: 2000}
  compose: {input_per_mtok: 10, output_per_mtok: 20}
agents:
  echo:
    route: [mock-echo]
    overridable_parameters: [max_tokens, temperature]
  chat:
    route: [mock-compose]
  short-memory:
    route: [mock-compose]
    memory: {max_turns: 1}
  cached:
    route: [mock-echo]
    overridable_parameters: [temperature]
    cache: {mode: "on", ttl_s: 60}
  opt-in:
    route: [mock-echo]
    cache: {mode: opt_in}
  slow-cached:
    route: [mock-slow]
    cache: {mode: "on"}
  slow:
    route: [mock-slow]
  trickle:
    route: [mock-trickle]
"""


@contextlib.asynccontextmanager
async def serve_state(backend: str, extra: str = "") -> AsyncIterator[Served]:
    """BASE (plus ``extra`` top-level YAML) served on ``backend``: embedded or shared."""
    config = textwrap.dedent(BASE) + textwrap.dedent(extra)
    if backend == "embedded":
        async with serve_config(config) as served:
            yield served
        return
    async with (
        postgres_schema() as schema,
        redis_prefix() as prefix,
        serve_config(config + shared_state_yaml(schema, prefix)) as served,
    ):
        yield served


def sessions(served: Served) -> session_pb2_grpc.SessionServiceStub:
    return session_pb2_grpc.SessionServiceStub(served.channel)


def usage(served: Served) -> usage_pb2_grpc.UsageServiceStub:
    return usage_pb2_grpc.UsageServiceStub(served.channel)


async def invoke_as(
    runner: Runner,
    tenant: str,
    agent: str,
    text: str,
    *,
    session_id: str = "",
    key_id: str = "",
    max_tokens: int | None = None,
) -> AgentResponse:
    """Invoke through the server's own runner as another tenant (no auth exists yet to pick
    a tenant over the wire)."""
    token = bind(CallContext(request_id="r-" + tenant, tenant=tenant, key_id=key_id))
    try:
        request = AgentRequest(
            agent=agent,
            messages=(Message(Role.USER, (TextPart(text),)),),
            request_id="r-" + tenant,
            session_id=session_id,
            parameters=Parameters(max_tokens=max_tokens),
        )
        return await runner.invoke(request, Deadline.after(10))
    finally:
        reset(token)
