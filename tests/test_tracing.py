"""OpenTelemetry by the book: the standard OTEL_* variables (as the OpenTelemetry Operator
injects them) reach real OTLP receivers over gRPC and HTTP; the server span is
opentelemetry-instrumentation-grpc's, with the call's agent, version, tenant and request id,
and a status per the RPC conventions; health checks and reflection make no spans."""

from __future__ import annotations

import asyncio
import gc
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import httpx2
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc
from switchboard_client import (
    AsyncClient,
    DeadlineExceededError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)

from service.config import ConfigError
from service.config.chain_model import TracingConfig
from service.observability.otel_env import OtelEnvError, tracing_settings
from tests.chain_helpers import AGENTS, auth_config, make_keys
from tests.harness import serve_config
from tests.waiting import wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SLOW = """
targets:
  mock-echo: {provider: mock, model: echo}
  slow: {provider: mock, model: echo, mock: {ttft_s: 30}}
  slow-tokens: {provider: mock, model: echo, mock: {tokens_per_s: 20}}
agents:
  echo: {route: [mock-echo]}
  stuck: {route: [slow]}
  trickle: {route: [slow-tokens]}
"""


def recording() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def servers(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]


def invoke(agent: str, text: str = "hello") -> pb.InvokeRequest:
    return pb.InvokeRequest(
        agent=agent, messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


# --- the standard variables, resolved --------------------------------------------------------


def test_operator_injected_variables_set_exporter_endpoint_resource_and_sampler() -> None:
    settings = tracing_settings(
        TracingConfig(),
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector.obs:4317",
            "OTEL_SERVICE_NAME": "switchboard-prod",
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=sb-7f9,service.name=ignored,"
            "deployment.environment=prod%20eu",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        },
        version="1.2.3",
    )
    # An endpoint and no OTEL_TRACES_EXPORTER: the specification's default, otlp.
    assert settings.exporter == "otlp"
    assert (settings.protocol, settings.endpoint) == ("grpc", "http://collector.obs:4317")
    assert settings.resource == {
        "k8s.pod.name": "sb-7f9",
        "service.name": "switchboard-prod",  # OTEL_SERVICE_NAME wins over the attributes
        "deployment.environment": "prod eu",
        "service.version": "1.2.3",
    }
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.25)


def test_nothing_configured_exports_nothing_and_skips_health_and_reflection() -> None:
    settings = tracing_settings(TracingConfig(), {})
    assert settings.exporter == "none"
    assert settings.service_name == "switchboard"
    assert set(settings.excluded_services) == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert tracing_settings(TracingConfig(), {"OTEL_SDK_DISABLED": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}).exporter == "none"  # fmt: skip


def test_http_protobuf_appends_the_signal_path_to_the_base_endpoint_only() -> None:
    base = tracing_settings(
        TracingConfig(),
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"},
    )  # fmt: skip
    assert (base.protocol, base.endpoint) == ("http/protobuf", "http://c:4318/v1/traces")
    signal = tracing_settings(
        TracingConfig(),
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:9999/custom",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        },
    )
    assert (signal.protocol, signal.endpoint) == ("http/protobuf", "http://t:9999/custom")
    assert signal.timeout_s == 2.5  # the specification's milliseconds


def test_config_keys_win_over_the_variables() -> None:
    settings = tracing_settings(
        TracingConfig(
            exporter="console", service_name="mine", sample_ratio=0.5, exclude_services=[]
        ),
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": "theirs",
            "OTEL_TRACES_SAMPLER": "always_off",
            "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": "switchboard.v1.AgentService",
        },
    )
    assert settings.exporter == "console"
    assert settings.service_name == "mine"
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.5)
    assert settings.excluded_services == ()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER='zipkin': name one of"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER='sometimes'"),
        ("OTEL_TRACES_SAMPLER_ARG", "lots", "OTEL_TRACES_SAMPLER_ARG='lots': not a number"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "maybe", "OTEL_EXPORTER_OTLP_INSECURE='maybe'"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(OtelEnvError) as raised:
        tracing_settings(TracingConfig(), {name: value})
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("signal", "general", "bad", "good"),
    [
        ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE", "maybe", "true"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "1000"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "s3cr3t", "a=b"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL", "json", "grpc"),
    ],
)
def test_a_bad_value_names_the_variable_it_was_read_from(
    signal: str, general: str, bad: str, good: str
) -> None:
    """The signal-specific variable wins over the general one: when it is the bad one, the
    message names it, whether or not the general one is set (and never a header's text)."""
    for environ in ({signal: bad}, {signal: bad, general: good}):
        with pytest.raises(OtelEnvError) as raised:
            tracing_settings(TracingConfig(), environ)
        message = str(raised.value)
        assert message.startswith(signal), message
        assert general + "=" not in message
        assert "s3cr3t" not in message
    with pytest.raises(OtelEnvError) as raised:
        tracing_settings(TracingConfig(), {general: bad})
    assert str(raised.value).startswith(general)


def test_header_values_never_appear_in_errors_or_reprs() -> None:
    secret = "api-key=s3cr3t-t0ken"
    settings = tracing_settings(TracingConfig(), {"OTEL_EXPORTER_OTLP_HEADERS": secret})
    assert settings.headers["api-key"].reveal() == "s3cr3t-t0ken"
    assert "s3cr3t" not in repr(settings)
    with pytest.raises(OtelEnvError) as raised:
        tracing_settings(TracingConfig(), {"OTEL_EXPORTER_OTLP_HEADERS": "s3cr3t-no-equals"})
    assert "s3cr3t" not in str(raised.value)


async def test_a_bad_variable_is_a_config_error_at_start() -> None:
    with pytest.raises(ConfigError, match=r"observability\.tracing: OTEL_TRACES_SAMPLER="):
        async with serve_config(AGENTS, {"OTEL_TRACES_SAMPLER": "nope"}):
            pass


# --- real receivers ----------------------------------------------------------------------------


class GrpcCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.received = asyncio.Event()

    async def Export(  # type: ignore[override]
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


@asynccontextmanager
async def grpc_collector() -> AsyncIterator[tuple[GrpcCollector, int]]:
    collector = GrpcCollector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield collector, port
    finally:
        await server.stop(None)


@asynccontextmanager
async def http_collector() -> AsyncIterator[
    tuple[list[trace_service_pb2.ExportTraceServiceRequest], asyncio.Event, int]
]:
    """An OTLP/HTTP receiver (protobuf over POST /v1/traces), as a collector's ``otlp``
    receiver serves it on 4318."""
    received: list[trace_service_pb2.ExportTraceServiceRequest] = []
    arrived = asyncio.Event()

    async def traces(request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        received.append(
            trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read())
        )
        arrived.set()
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield received, arrived, port
    finally:
        await runner.cleanup()


def span_names(requests: list[trace_service_pb2.ExportTraceServiceRequest]) -> set[str]:
    return {
        span.name
        for request in requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }


def resource_of(request: trace_service_pb2.ExportTraceServiceRequest) -> dict[str, str]:
    attributes = request.resource_spans[0].resource.attributes
    return {a.key: a.value.string_value for a in attributes}


async def test_operator_style_variables_export_over_otlp_grpc_with_headers() -> None:
    async with grpc_collector() as (collector, port):
        environ = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_SERVICE_NAME": "sb-operator",
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=agents",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=ops,authorization=Bearer%20abc",
        }
        async with serve_config(AGENTS, environ) as served:
            await served.client.invoke("echo", "to the collector")
        # Stopping the app shuts its tracer provider down, which flushes the batch.
        await asyncio.wait_for(collector.received.wait(), timeout=30)
    assert {"switchboard.v1.AgentService/Invoke", "chat echo"} <= span_names(collector.requests)
    resource = resource_of(collector.requests[0])
    assert resource["service.name"] == "sb-operator"
    assert resource["k8s.namespace.name"] == "agents"
    assert resource["service.version"]
    assert collector.metadata[0]["x-tenant"] == "ops"
    assert collector.metadata[0]["authorization"] == "Bearer abc"


async def test_otlp_http_protobuf_reaches_an_http_receiver() -> None:
    async with http_collector() as (received, arrived, port):
        environ = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        }
        async with serve_config(AGENTS, environ) as served:
            await served.client.invoke("echo", "over http")
        await asyncio.wait_for(arrived.wait(), timeout=30)
    assert "switchboard.v1.AgentService/Invoke" in span_names(received)
    assert resource_of(received[0])["service.name"] == "switchboard"


# --- the server span -------------------------------------------------------------------------


async def test_the_server_span_carries_agent_version_tenant_and_request_id(tmp_path: Path) -> None:
    provider, exporter = recording()
    path, keys, records = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path), api_key=keys[0], tracer_provider=provider) as s:
        stub = pb_grpc.AgentServiceStub(s.channel)
        await stub.Invoke(
            invoke("echo"),
            metadata=[
                ("authorization", f"Bearer {keys[0]}"),
                ("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),
                ("x-request-id", "req-42"),
            ],
        )
        agent_version = s.app.snapshot.agents["echo"].version
    [server] = servers(exporter)
    attributes = dict(server.attributes or {})
    assert server.instrumentation_scope is not None
    assert server.instrumentation_scope.name == "opentelemetry.instrumentation.grpc"
    assert server.name == "switchboard.v1.AgentService/Invoke"
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert attributes["rpc.system"] == "grpc"
    assert attributes["rpc.service"] == "switchboard.v1.AgentService"
    assert attributes["rpc.method"] == "Invoke"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["gen_ai.agent.name"] == "echo"
    assert attributes["gen_ai.agent.version"] == agent_version
    assert attributes["switchboard.tenant"] == "acme"
    assert attributes["switchboard.key_id"] == records[0].id
    assert attributes["switchboard.request_id"] == "req-42"
    assert server.status.status_code == StatusCode.UNSET


async def test_caller_errors_leave_the_span_status_unset(tmp_path: Path) -> None:
    provider, exporter = recording()
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",)), ("beta", ("echo",))])
    async with serve_config(auth_config(path), api_key=keys[0], tracer_provider=provider) as s:
        with pytest.raises(NotFoundError):
            await s.client.get_agent("no-such-agent")
        beta = AsyncClient(s.address, channel=s.channel, api_key=keys[1])
        with pytest.raises(PermissionDeniedError):
            await beta.invoke("assistant", "not mine")
        with pytest.raises(UnauthenticatedError):
            await AsyncClient(s.address, channel=s.channel).invoke("echo", "no key")
    by_code = {dict(x.attributes or {})["rpc.grpc.status_code"]: x for x in servers(exporter)}
    assert len(by_code) == 3
    for code in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    ):
        assert by_code[code.value[0]].status.status_code == StatusCode.UNSET, code


async def test_a_deadline_and_a_cancel_are_on_the_server_span() -> None:
    """The server's own deadline (the default one: no race with the caller's clock) is
    DEADLINE_EXCEEDED and an ERROR; a caller's cancel is CANCELLED and leaves it unset."""
    provider, exporter = recording()
    config = SLOW.replace("targets:", "server: {default_deadline_s: 0.3}\ntargets:", 1)
    async with serve_config(config, tracer_provider=provider) as s:
        with pytest.raises(DeadlineExceededError):
            await s.client.invoke("stuck", "hello")
    [deadline] = servers(exporter)

    provider, exporter = recording()
    async with serve_config(SLOW, tracer_provider=provider) as s:
        stub = pb_grpc.AgentServiceStub(s.channel)
        words = " ".join(f"w{i}" for i in range(200))
        call = stub.Stream(pb.StreamRequest(agent="trickle", messages=invoke("", words).messages))
        kinds = [(await call.read()).WhichOneof("event") for _ in range(2)]
        assert kinds == ["start", "text_delta"]
        call.cancel()
        await wait_for(lambda: len(servers(exporter)) == 1, what="the cancelled call's span")
    [cancelled] = servers(exporter)
    for span, code, status in (
        (deadline, grpc.StatusCode.DEADLINE_EXCEEDED, StatusCode.ERROR),
        (cancelled, grpc.StatusCode.CANCELLED, StatusCode.UNSET),
    ):
        assert dict(span.attributes or {})["rpc.grpc.status_code"] == code.value[0]
        assert span.status.status_code == status


async def test_health_checks_and_reflection_make_no_spans_unless_asked() -> None:
    provider, exporter = recording()
    async with serve_config(AGENTS, tracer_provider=provider) as s:
        health = health_pb2_grpc.HealthStub(s.channel)
        await health.Check(health_pb2.HealthCheckRequest())
        reflect = s.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        )()
        await reflect.done_writing()
        await s.client.invoke("echo", "traced")
    assert [x.name for x in servers(exporter)] == ["switchboard.v1.AgentService/Invoke"]

    provider, exporter = recording()
    environ = {"OTEL_PYTHON_GRPC_EXCLUDED_SERVICES": "switchboard.v1.AgentService"}
    async with serve_config(AGENTS, environ, tracer_provider=provider) as s:
        await health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest())
        await s.client.invoke("echo", "not traced")
    [health_span] = servers(exporter)
    assert health_span.name == "grpc.health.v1.Health/Check"
    assert dict(health_span.attributes or {})["rpc.grpc.status_code"] == 0


async def test_the_openai_door_makes_a_server_span_with_the_same_facts() -> None:
    provider, exporter = recording()
    async with (
        serve_config(AGENTS, tracer_provider=provider, http=True) as s,
        httpx2.AsyncClient(base_url=s.http_url) as http,
    ):
        answer = await http.post(
            "/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
        assert answer.status_code == 200
    [server] = servers(exporter)
    attributes = dict(server.attributes or {})
    assert server.name == "switchboard.v1.AgentService/Invoke"
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert attributes["gen_ai.agent.name"] == "echo"
    assert attributes["switchboard.door"] == "openai"
    assert "rpc.system" not in attributes  # an HTTP API, not an RPC protocol
    assert attributes["client.address"] == "127.0.0.1"
    assert attributes["rpc.grpc.status_code"] == 0


def _live_span_generators(before: frozenset[int] = frozenset()) -> set[str]:
    """The async generators alive in this process that make a call's spans: the gRPC
    instrumentation's server-span wrapper and the invoke_agent span's; those of ids in
    ``before`` (alive before this test's call: an earlier test's leftovers) excluded."""
    names = set()
    for obj in gc.get_objects():
        if isinstance(obj, types.AsyncGeneratorType) and id(obj) not in before:
            code = obj.ag_code
            if "instrumentation/grpc" in code.co_filename or code.co_filename.endswith(
                "observability/agent_span.py"
            ):
                names.add(code.co_name)
    return names


@pytest.mark.parametrize(
    ("exported", "environ"),
    [
        ("nothing", {}),
        ("an in-memory exporter", None),
        ("OTEL_TRACES_EXPORTER", {"OTEL_TRACES_EXPORTER": "console"}),
    ],
)
async def test_an_open_stream_holds_span_wrappers_only_when_spans_leave(
    exported: str, environ: dict[str, str] | None
) -> None:
    """Issue 17: with nothing exported a call makes no server span through the
    instrumentation and no invoke_agent wrapper (each idle stream holds about 4 KiB less);
    with an exporter both wrap the open stream as before."""
    provider = recording()[0] if environ is None else None
    gc.collect()
    before = frozenset(id(o) for o in gc.get_objects() if isinstance(o, types.AsyncGeneratorType))
    async with serve_config(SLOW, environ, tracer_provider=provider) as served:
        call = pb_grpc.AgentServiceStub(served.channel).Stream(
            pb.StreamRequest(
                agent="trickle",
                messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="a b c d")])],
            )
        )
        async for event in call:
            if event.WhichOneof("event") == "text_delta":
                break
        live = _live_span_generators(before)
        call.cancel()
    assert live == (set() if exported == "nothing" else {"_stream_interceptor", "_within"})
