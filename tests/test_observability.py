"""Traces, metrics and logs of real calls: the span tree (server span → invoke_agent → GenAI
model-call span) in an in-memory exporter and through OTLP, /metrics scraped over HTTP, one
JSON log line per call with no secrets or prompts."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc
from switchboard_client import (
    AsyncClient,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
)

from service.app import App
from service.config import ConfigError, load
from service.config.chain_model import LogsConfig
from service.observability.logging import CALLS_LOGGER, JsonFormatter, configure
from tests.chain_helpers import AGENTS, auth_config, make_keys, sample, scrape
from tests.fakes.openai_fake import OpenAIFake
from tests.fakes.openai_fake import Scenario as OpenAIScenario
from tests.harness import serve_config
from tests.provider_rigs import openai_rig

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
METRICS = "observability: {metrics: {port: 0}}\n"


def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def invoke_request(agent: str, text: str) -> pb.InvokeRequest:
    return pb.InvokeRequest(
        agent=agent, messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


async def test_a_call_continues_the_callers_trace_with_a_genai_child_span() -> None:
    provider, exporter = tracing()
    async with serve_config(AGENTS, tracer_provider=provider) as served:
        stub = pb_grpc.AgentServiceStub(served.channel)
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        await stub.Invoke(
            invoke_request("echo", "hello spans"), metadata=[("traceparent", traceparent)]
        )
    spans = exporter.get_finished_spans()
    server = one(spans, kind=SpanKind.SERVER)
    agent = one(spans, kind=SpanKind.INTERNAL)
    model = one(spans, kind=SpanKind.CLIENT)

    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.attributes is not None
    assert server.attributes["rpc.method"] == "Invoke"
    assert server.attributes["rpc.grpc.status_code"] == 0

    assert agent.name == "invoke_agent echo"
    assert agent.parent is not None
    assert agent.parent.span_id == server.context.span_id
    assert model.parent is not None
    assert model.parent.span_id == agent.context.span_id
    assert model.context.trace_id == server.context.trace_id
    assert model.name == "chat echo"
    attributes = dict(model.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "mock"
    assert attributes["gen_ai.request.model"] == "echo"
    assert attributes["gen_ai.response.model"] == "echo"
    assert attributes["gen_ai.usage.input_tokens"] == 2
    assert attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["switchboard.target"] == "mock-echo"


async def test_a_refused_call_has_its_status_on_the_server_span(tmp_path: Path) -> None:
    provider, exporter = tracing()
    path, _, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path), tracer_provider=provider) as served:
        with pytest.raises(UnauthenticatedError):
            await served.client.invoke("echo", "hi")
    server = one(exporter.get_finished_spans(), kind=SpanKind.SERVER)
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert not [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]


def one(spans: tuple[ReadableSpan, ...], *, kind: SpanKind) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A fake OTLP collector: keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = asyncio.Event()

    async def Export(  # type: ignore[override]
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_spans_reach_an_otlp_collector_when_configured() -> None:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = f"""
observability:
  tracing: {{exporter: otlp, otlp_endpoint: "http://127.0.0.1:{port}", service_name: sb-test}}
{AGENTS}
"""
    try:
        async with serve_config(config) as served:
            await served.client.invoke("echo", "to the collector")
        # Stopping the app shuts its tracer provider down, which flushes the batch.
        await asyncio.wait_for(collector.received.wait(), timeout=30)
    finally:
        await server.stop(None)
    names = {
        span.name
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert "chat echo" in names
    assert "switchboard.v1.AgentService/Invoke" in names
    resource = collector.requests[0].resource_spans[0].resource
    assert {(a.key, a.value.string_value) for a in resource.attributes} >= {
        ("service.name", "sb-test")
    }


async def test_metrics_are_scraped_over_http(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("echo",))])
    config = auth_config(path, METRICS + "rate_limits: {key: {requests_per_min: 4}}")
    async with serve_config(config, api_key=keys[0]) as served:
        assert served.app.metrics_port
        await served.client.invoke("echo", "one two three")
        assert [e async for e in served.client.stream("echo", "four five")]
        with pytest.raises(PermissionDeniedError):
            await served.client.invoke("assistant", "no")
        anonymous = AsyncClient(served.address, channel=served.channel)
        with pytest.raises(UnauthenticatedError):
            await anonymous.invoke("echo", "no key")
        with pytest.raises(UnauthenticatedError):
            await anonymous.invoke("made-up-agent", "no key")
        await served.client.invoke("echo", "again")  # the 4th of 4 this minute
        with pytest.raises(ResourceExhaustedError):
            await served.client.invoke("echo", "again")
        text = await scrape(served.app.metrics_port)

    def calls(**labels: str) -> float | None:
        return sample(text, "switchboard_calls_total", **labels)

    assert calls(rpc_method="Invoke", agent="echo", tenant="acme", code="OK") == 2
    assert calls(rpc_method="Stream", agent="echo", tenant="acme", code="OK") == 1
    assert calls(rpc_method="Invoke", agent="assistant", code="PERMISSION_DENIED") == 1
    assert calls(rpc_method="Invoke", agent="echo", tenant="default", code="UNAUTHENTICATED") == 1
    # A name the caller made up is not a label value.
    assert calls(rpc_method="Invoke", agent="(unknown)", code="UNAUTHENTICATED") == 1
    assert "made-up-agent" not in text
    assert calls(rpc_method="Invoke", agent="echo", code="RESOURCE_EXHAUSTED") == 1
    assert sample(text, "switchboard_ratelimit_refusals_total", limit="requests_per_min") == 1
    assert sample(text, "switchboard_tokens_total", agent="echo", direction="output") == 3 + 2 + 1
    assert sample(text, "switchboard_upstream_calls_total", target="mock-echo", outcome="ok") == 3
    assert sample(text, "switchboard_call_duration_seconds_count", rpc_method="Invoke") is not None
    assert sample(text, "switchboard_time_to_first_token_seconds_count", agent="echo") == 1
    assert sample(text, "switchboard_streams_in_flight", rpc_method="Stream") == 0


async def test_two_servers_keep_separate_metrics() -> None:
    async with (
        serve_config(METRICS + AGENTS) as a,
        serve_config(METRICS + AGENTS) as b,
    ):
        await a.client.invoke("echo", "only on a")
        assert a.app.metrics_port != b.app.metrics_port
        text_a, text_b = (
            await scrape(a.app.metrics_port or 0),
            await scrape(b.app.metrics_port or 0),
        )
    assert sample(text_a, "switchboard_calls_total", agent="echo", code="OK") == 1
    assert sample(text_b, "switchboard_calls_total", agent="echo", code="OK") is None


async def test_one_json_line_per_call_without_secrets_or_prompts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    provider, _ = tracing()
    path, keys, records = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path), api_key=keys[0], tracer_provider=provider) as s:
        stub = pb_grpc.AgentServiceStub(s.channel)
        await stub.Invoke(
            invoke_request("echo", "my secret prompt"),
            metadata=[
                ("authorization", f"Bearer {keys[0]}"),
                ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
            ],
        )
        assert [e async for e in s.client.stream("echo", "streamed words")]
        wrong = AsyncClient(s.address, channel=s.channel, api_key=keys[0][:-2] + "xx")
        with pytest.raises(UnauthenticatedError):
            await wrong.invoke("echo", "hi")
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    calls = [json.loads(line) for line, r in zip(lines, caplog.records, strict=True)
             if r.name == CALLS_LOGGER]  # fmt: skip
    assert len(calls) == 3
    invoke, stream, refused = calls
    assert invoke["trace_id"] == TRACE_ID
    assert len(invoke["span_id"]) == 16
    assert len(invoke["request_id"]) == 32
    assert invoke["tenant"] == "acme"
    assert invoke["key_id"] == records[0].id
    assert invoke["agent"] == "echo"
    assert invoke["target"] == "mock-echo"
    assert invoke["code"] == "OK"
    assert invoke["input_tokens"] == 3
    assert invoke["output_tokens"] == 3
    assert invoke["duration_ms"] > 0
    assert stream["method"] == "/switchboard.v1.AgentService/Stream"
    assert "ttft_ms" in stream
    assert refused["code"] == "UNAUTHENTICATED"
    assert refused["key_id"] == ""
    everything = "\n".join(lines)
    assert keys[0] not in everything
    assert keys[0][:-2] not in everything
    assert records[0].sha256 not in everything
    assert "my secret prompt" not in everything


async def test_a_taken_metrics_port_is_a_clear_config_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            f"auth: {{enabled: false}}\nobservability: {{metrics: {{port: {port}}}}}\n{AGENTS}"
        )
        app = App(load(config, {}))
        with pytest.raises(ConfigError, match=f"observability.metrics: cannot listen on .*{port}"):
            await app.start("127.0.0.1", 0)
        await app.stop(0)


async def test_without_an_exporter_nothing_is_recorded_but_logs_keep_trace_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No exporter configured: spans are non-recording (the cheap path), yet the call line
    still carries the caller's trace id and a span id of its own."""
    caplog.set_level(logging.INFO)
    async with serve_config(AGENTS) as s:
        provider = s.app.tracer_provider
        assert not provider.get_tracer("probe").start_span("probe").is_recording()
        stub = pb_grpc.AgentServiceStub(s.channel)
        await stub.Invoke(
            invoke_request("echo", "hello"),
            metadata=[("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01")],
        )
        await stub.Invoke(invoke_request("echo", "no parent"))
    formatter = JsonFormatter()
    calls = [json.loads(formatter.format(r)) for r in caplog.records if r.name == CALLS_LOGGER]
    assert [c["trace_id"] == TRACE_ID for c in calls] == [True, False]
    assert all(len(c["trace_id"]) == 32 and len(c["span_id"]) == 16 for c in calls)
    assert calls[0]["span_id"] != PARENT_ID


async def test_model_span_carries_every_reported_usage_part() -> None:
    provider, exporter = tracing()
    fake_usage = OpenAIScenario(usage=(100, 50), cached_tokens=60, reasoning_tokens=40)
    async with OpenAIFake(fake_usage) as fake:
        config = f"""
        targets:
          gpt:
            provider: openai
            model: gpt-fake
            base_url: {fake.base_url}/v1
            api_key: {{env: OPENAI_API_KEY}}
          local:
            provider: openai_compatible
            model: llama-fake
            base_url: {fake.base_url}/v1
        agents:
          chat: {{route: [gpt]}}
          local: {{route: [local]}}
        """
        env = {"OPENAI_API_KEY": "sk-test-0123456789abcdef"}
        async with serve_config(config, env, tracer_provider=provider) as served:
            await served.client.invoke("chat", "hi")
            fake.default = OpenAIScenario(omit_usage=True)
            await served.client.invoke("local", "hi")
    reported, estimated = (
        dict(s.attributes or {}) for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT
    )

    assert reported["gen_ai.usage.cache_read.input_tokens"] == 60
    assert reported["gen_ai.usage.reasoning.output_tokens"] == 40
    assert "gen_ai.usage.cache_creation.input_tokens" not in reported
    assert "switchboard.usage.estimated" not in reported
    assert estimated["switchboard.usage.estimated"] is True


async def test_the_sdk_http_client_is_quiet_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    """At INFO a provider call logs Switchboard's one call line, not the SDK HTTP client's
    per-request "HTTP Request: POST …" line (a log write per upstream call, on the loop)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure(LogsConfig(level="INFO", format="json"))
        async with openai_rig() as rig:
            await rig.client.invoke("chat", "hi")
        for handler in root.handlers:
            handler.flush()
        lines = capsys.readouterr().err.splitlines()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    calls = [json.loads(line) for line in lines if '"logger": "switchboard.calls"' in line]
    assert [c["code"] for c in calls] == ["OK"]
    assert not [line for line in lines if "HTTP Request" in line]


async def test_call_lines_say_the_same_written_directly_or_through_logging(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the JSON stream handler alone (as ``switchboard serve`` sets it up), the lines of
    calls ending in one loop turn are written together after the answers, straight to the
    handler's stream; with any other handler on the way (here a capture's), each line is a
    record handled by logging. Both write the same fields."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    captured: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = captured.append  # type: ignore[method-assign]
    try:
        configure(LogsConfig(level="INFO", format="json"))
        async with serve_config(AGENTS) as s:
            ids = [f"req-{i:02d}" for i in range(12)]
            await asyncio.gather(*(s.client.invoke("echo", "hi", request_id=i) for i in ids))
            logging.getLogger(CALLS_LOGGER).addHandler(capture)
            await s.client.invoke("echo", "hi", request_id="req-logged")
            logging.getLogger(CALLS_LOGGER).removeHandler(capture)
        lines = capsys.readouterr().err.splitlines()
    finally:
        logging.getLogger(CALLS_LOGGER).removeHandler(capture)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    calls = [json.loads(line) for line in lines if '"logger": "switchboard.calls"' in line]
    assert sorted(c["request_id"] for c in calls) == [*ids, "req-logged"]
    assert [r.request_id for r in captured] == ["req-logged"]  # type: ignore[attr-defined]
    logged = json.loads(JsonFormatter().format(captured[0]))
    written = next(c for c in calls if c["request_id"] == "req-logged")
    assert logged == written
    direct = next(c for c in calls if c["request_id"] == "req-00")
    varying = {"ts", "duration_ms", "request_id", "trace_id", "span_id"}
    assert list(direct) == list(logged)
    assert {k: v for k, v in direct.items() if k not in varying} == {
        k: v for k, v in logged.items() if k not in varying
    }


@pytest.mark.parametrize(
    "created",
    [
        1_790_000_000.0,
        1_790_000_000.0005,  # half a millisecond: truncated, as isoformat does
        1_790_000_000.9995,
        1_790_000_000.9999995,  # rounds up into the next second, as fromtimestamp does
        1_790_000_059.9999996,  # ... and into the next minute
        1_790_000_001.2345674,
    ],
)
def test_a_log_line_is_dated_as_datetime_dates_it(created: float) -> None:
    formatter = JsonFormatter()
    line = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    line.created = created - 1.0
    formatter.format(line)  # the second before is the one remembered
    line.created = created
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert json.loads(formatter.format(line))["ts"] == expected
