"""The ``invoke_agent`` span (OpenTelemetry GenAI agent spans) on the real in-process server:
server span → ``invoke_agent {agent}`` → one ``chat {model}`` span per model call, retries
and fallbacks included; a caller's error makes no agent span and leaves the server span's
status unset."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode
from switchboard_client import InvalidArgumentError, NotFoundError, UnavailableError

from service.config import load
from service.domain import AgentRequest, Event, Finish, FinishReason
from service.observability.agent_span import AgentSpans
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.openai_fake import FakeToolCall, OpenAIFake, Scenario
from tests.harness import serve_config
from tests.tools.rig import http_tool_server

KEY = {"OPENAI_API_KEY": "sk-test-0123456789abcdef"}


def recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def config(base_url: str) -> str:
    return f"""
    targets:
      first: {{provider: openai, model: gpt-first, base_url: "{base_url}/v1",
               api_key: {{env: OPENAI_API_KEY}}}}
      second: {{provider: openai, model: gpt-second, base_url: "{base_url}/v1",
                api_key: {{env: OPENAI_API_KEY}}}}
    agents:
      helper:
        route: [first, second]
        version: "2026-11-30"
        description: Answers questions.
    """


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


def attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_the_agent_span_holds_every_model_call_of_a_fallback() -> None:
    provider, exporter = recording()
    failing = Scenario(status=500, error={"message": "down", "type": "server_error"})
    async with OpenAIFake() as fake:
        fake.push(failing, Scenario(usage=(100, 7), cached_tokens=60))
        async with serve_config(config(fake.base_url), KEY, tracer_provider=provider) as served:
            answer = await served.client.invoke("helper", "hi", session_id="conversation-1")
            port = int(fake.base_url.rsplit(":", 1)[1])
    spans = exporter.get_finished_spans()
    [server] = by_kind(spans, SpanKind.SERVER)
    [agent] = by_kind(spans, SpanKind.INTERNAL)
    models = by_kind(spans, SpanKind.CLIENT)

    assert agent.name == "invoke_agent helper"
    assert agent.parent is not None
    assert agent.parent.span_id == server.context.span_id
    assert [m.name for m in models] == ["chat gpt-first", "chat gpt-second"]
    assert all(m.parent is not None and m.parent.span_id == agent.context.span_id for m in models)
    assert models[0].status.status_code == StatusCode.ERROR
    assert agent.status.status_code == StatusCode.UNSET

    a = attributes(agent)
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == "helper"
    assert a["gen_ai.agent.version"] == "2026-11-30"
    assert a["gen_ai.agent.description"] == "Answers questions."
    assert a["gen_ai.conversation.id"] == "conversation-1"
    assert a["gen_ai.response.id"] == answer.request_id
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-second"
    assert a["gen_ai.response.model"] == "gpt-second"
    assert a["server.address"] == "127.0.0.1"
    assert a["server.port"] == port
    assert a["gen_ai.usage.input_tokens"] == 100
    assert a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.usage.cache_read.input_tokens"] == 60
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["switchboard.attempts"] == answer.attempts == 2
    assert a["switchboard.target"] == "second"
    assert attributes(models[1])["server.address"] == "127.0.0.1"


async def test_a_stream_is_traced_the_same_and_a_failed_agent_is_an_error() -> None:
    provider, exporter = recording()
    failing = Scenario(status=500, error={"message": "down", "type": "server_error"})
    async with OpenAIFake() as fake:
        fake.push(Scenario())
        async with serve_config(config(fake.base_url), KEY, tracer_provider=provider) as served:
            assert [e async for e in served.client.stream("helper", "hi")]
            fake.push(failing, failing)
            with pytest.raises(UnavailableError):
                await served.client.invoke("helper", "hi")
    ok, failed = by_kind(exporter.get_finished_spans(), SpanKind.INTERNAL)
    assert attributes(ok)["gen_ai.request.model"] == "gpt-first"
    assert ok.status.status_code == StatusCode.UNSET
    assert failed.status.status_code == StatusCode.ERROR
    assert attributes(failed)["error.type"]
    assert "gen_ai.response.id" not in attributes(failed)


async def test_caller_errors_make_no_agent_span_and_leave_the_server_status_unset() -> None:
    provider, exporter = recording()
    async with (
        OpenAIFake() as fake,
        serve_config(config(fake.base_url), KEY, tracer_provider=provider) as served,
    ):
        with pytest.raises(NotFoundError):
            await served.client.invoke("no-such-agent", "hi")
        with pytest.raises(InvalidArgumentError):
            await served.client.invoke("helper", [])
    spans = exporter.get_finished_spans()
    assert by_kind(spans, SpanKind.INTERNAL) == []
    assert by_kind(spans, SpanKind.CLIENT) == []
    codes = {attributes(s)["rpc.grpc.status_code"]: s for s in by_kind(spans, SpanKind.SERVER)}
    assert set(codes) == {
        grpc.StatusCode.NOT_FOUND.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
    }
    assert all(s.status.status_code == StatusCode.UNSET for s in codes.values())


async def test_each_step_and_tool_call_of_the_loop_is_a_child_of_one_agent_span() -> None:
    provider, exporter = recording()
    async with OpenAIFake() as fake, http_tool_server() as web:
        weather = FakeToolCall(id="c1", name="weather", arguments=json.dumps({"city": "Paris"}))
        fake.push(Scenario(tool_calls=(weather,)), Scenario(text="Sunny."))
        cfg = f"""
        targets:
          model: {{provider: openai, model: gpt-loop, base_url: "{fake.base_url}/v1",
                   api_key: {{env: OPENAI_API_KEY}}}}
        http_tools:
          weather:
            description: Weather for a city.
            url: {web.url}/weather/{{city}}
            parameters: {{type: object, properties: {{city: {{type: string}}}}, required: [city]}}
            class: read_only
        agents:
          ops: {{route: [model], server_tools: [weather], loop: {{max_steps: 3}}}}
        """
        async with serve_config(cfg, KEY, tracer_provider=provider) as served:
            answer = await served.client.invoke("ops", "weather in Paris?")
    assert answer.message.content[0].text == "Sunny."
    spans = exporter.get_finished_spans()
    [agent] = [s for s in spans if s.name == "invoke_agent ops"]
    [tool] = [s for s in spans if s.name == "execute_tool weather"]
    steps = by_kind(spans, SpanKind.CLIENT)
    assert len(steps) == 2
    children = [*steps, tool]
    assert all(s.parent is not None and s.parent.span_id == agent.context.span_id for s in children)
    assert steps[0].end_time is not None
    assert tool.start_time is not None
    assert steps[0].end_time <= tool.start_time
    assert attributes(agent)["gen_ai.agent.name"] == "ops"
    t = attributes(tool)
    assert t["gen_ai.operation.name"] == "execute_tool"
    assert t["gen_ai.tool.name"] == "weather"
    assert t["gen_ai.tool.call.id"] == "c1"
    assert t["gen_ai.tool.type"] == "extension"
    assert t["gen_ai.tool.description"] == "Weather for a city."
    assert t["switchboard.tool.source"] == "http"
    assert t["switchboard.tool.outcome"] == "ok"
    assert tool.kind == SpanKind.INTERNAL
    assert tool.status.status_code == StatusCode.UNSET


async def test_model_spans_carry_the_upstreams_response_id() -> None:
    provider, exporter = recording()
    async with OpenAIFake() as openai, AnthropicFake() as anthropic:
        cfg = f"""
        targets:
          gpt: {{provider: openai, model: gpt-x, base_url: "{openai.base_url}/v1",
                 api_key: {{env: OPENAI_API_KEY}}}}
          claude: {{provider: anthropic, model: claude-x, base_url: "{anthropic.base_url}",
                    api_key: {{env: ANTHROPIC_API_KEY}}}}
        agents:
          gpt: {{route: [gpt]}}
          claude: {{route: [claude]}}
        """
        env = {**KEY, "ANTHROPIC_API_KEY": "sk-ant-test-0123456789abcdef"}
        async with serve_config(cfg, env, tracer_provider=provider) as served:
            await served.client.invoke("gpt", "hi")
            assert [e async for e in served.client.stream("claude", "hi")]
    ids = {
        s.name: str(attributes(s).get("gen_ai.response.id", ""))
        for s in by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    }
    assert ids["chat gpt-x"].startswith("chatcmpl-fake")
    assert ids["chat claude-x"].startswith("msg_fake")


def test_an_unsampled_call_gets_its_events_back_unwrapped(tmp_path: Path) -> None:
    """Nothing sampled (no exporter: the default): no span, and no work per event."""
    path = tmp_path / "c.yaml"
    path.write_text("targets: {m: {provider: mock, model: echo}}\nagents: {a: {route: [m]}}\n")
    agent = load(path, {}).agents["a"]
    request = AgentRequest(agent="a", messages=(), request_id="r1")

    async def events() -> AsyncGenerator[Event, None]:
        yield Finish(FinishReason.STOP)

    unsampled = AgentSpans(TracerProvider(sampler=ALWAYS_OFF).get_tracer("t"))
    source = events()
    assert unsampled.traced(agent, request, source) is source
    provider, exporter = recording()
    sampled = AgentSpans(provider.get_tracer("t")).traced(agent, request, source)
    assert sampled is not source

    async def drain() -> list[Event]:
        return [e async for e in sampled]

    assert asyncio.run(drain()) == [Finish(FinishReason.STOP)]
    [span] = exporter.get_finished_spans()
    assert span.name == "invoke_agent a"
