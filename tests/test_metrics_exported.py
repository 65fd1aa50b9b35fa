"""What an operator's Prometheus scrapes from a real server: the standard collectors, the
build's facts, cost by tenant, agent and model, budgets, the RPC service and method as two
labels, health and reflection left out of the agent-call metrics; and what the call log line
says of an answer (agent version, model, cost, cache hit, attempts)."""

from __future__ import annotations

import json
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service.observability.logging import CALLS_LOGGER, JsonFormatter
from service.version import package_version
from tests.chain_helpers import sample, scrape
from tests.harness import serve_config

AGENT_SERVICE = "switchboard.v1.AgentService"
PRICED = """
observability: {metrics: {port: 0}}
targets:
  mock-echo: {provider: mock, model: echo}
pricing:
  echo: {input_per_mtok: 1, output_per_mtok: 2}
agents:
  echo: {route: [mock-echo], version: "7", cache: {mode: "on", ttl_s: 60}}
budgets:
  - {name: daily, tenant: "*", period: day, limit_usd: 25}
  - {name: acme-month, tenant: acme, period: month, limit_usd: 300}
"""


async def test_the_standard_collectors_and_build_info_are_scraped() -> None:
    async with serve_config(PRICED) as served:
        text = await scrape(served.app.metrics_port or 0)
    assert (sample(text, "process_cpu_seconds_total") or 0) > 0
    assert (sample(text, "process_resident_memory_bytes") or 0) > 0
    assert sample(text, "python_info", implementation="CPython") == 1
    assert sample(text, "python_gc_collections_total", generation="0") is not None
    assert sample(text, "switchboard_build_info", version=package_version()) == 1
    assert sample(text, "switchboard_build_info", grpc_version=grpc.__version__) == 1


async def test_cost_is_counted_by_tenant_agent_and_model_as_charged() -> None:
    async with serve_config(PRICED) as served:
        first = await served.client.invoke("echo", "one two three")
        await served.client.invoke("echo", "four five")
        text = await scrape(served.app.metrics_port or 0)
    charged = first.usage.cost_usd
    assert charged > 0
    cost = sample(text, "switchboard_cost_usd_total", tenant="default", agent="echo", model="echo")
    # The second answer's cost follows from the same prices (2 words in, 2 out).
    assert cost == pytest.approx(charged + (2 * 1 + 2 * 2) / 1e6)


async def test_budgets_are_published_with_their_limits() -> None:
    async with serve_config(PRICED) as served:
        text = await scrape(served.app.metrics_port or 0)
        served.path.write_text(served.path.read_text().replace("limit_usd: 25", "limit_usd: 40"))
        assert await served.app.reload()
        after = await scrape(served.app.metrics_port or 0)
    limit = "switchboard_budget_limit_usd"
    assert sample(text, limit, budget="daily", tenant="*", period="day", per_key="false") == 25
    assert sample(text, limit, budget="acme-month", tenant="acme", period="month") == 300
    assert sample(after, limit, budget="daily") == 40


async def test_the_method_is_its_service_and_name_and_health_and_reflection_stay_out() -> None:
    async with serve_config(PRICED) as served:
        await served.client.invoke("echo", "hello")
        assert [e async for e in served.client.stream("echo", "hello there")]
        health = health_pb2_grpc.HealthStub(served.channel)
        for _ in range(3):
            await health.Check(health_pb2.HealthCheckRequest())
        reflection = reflection_pb2_grpc.ServerReflectionStub(served.channel)
        listing = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        assert [r async for r in listing]
        text = await scrape(served.app.metrics_port or 0)
    calls = "switchboard_calls_total"
    assert sample(text, calls, rpc_service=AGENT_SERVICE, rpc_method="Invoke", code="OK") == 1
    assert sample(text, calls, rpc_service=AGENT_SERVICE, rpc_method="Stream", code="OK") == 1
    streams = "switchboard_streams_in_flight"
    assert sample(text, streams, rpc_service=AGENT_SERVICE, rpc_method="Stream") == 0
    series = [line for line in text.splitlines() if line.startswith("switchboard_call")]
    assert series
    assert not [line for line in series if "grpc.health" in line or "reflection" in line]
    assert not [line for line in text.splitlines() if ' method="' in line or "{method=" in line]


async def test_the_call_line_says_version_model_cost_cache_hit_and_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with serve_config(PRICED) as served:
        answer = await served.client.invoke("echo", "cache me")
        again = await served.client.invoke("echo", "cache me")
    assert again.cache_hit
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == CALLS_LOGGER]
    first, second = lines
    assert first["agent_version"] == "7"
    assert first["model"] == "echo"
    assert first["cost_usd"] == pytest.approx(answer.usage.cost_usd)
    assert first["cost_usd"] > 0
    assert first["cache_hit"] is False
    assert first["attempts"] == 1
    assert second["cache_hit"] is True
