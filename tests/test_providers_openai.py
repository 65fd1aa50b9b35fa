"""The openai and openai_compatible providers: the real SDK against a fake upstream, seen
through a real grpc.aio server and the Python client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import struct_pb2
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import (
    AsyncClient,
    DeadlineExceededError,
    Folder,
    SwitchboardError,
    UnavailableError,
    user,
)

from tests.fakes.openai_fake import FakeToolCall, OpenAIFake, Scenario
from tests.harness import Served, serve_config

pytestmark = pytest.mark.asyncio

KEY = "sk-test-0123456789abcdefSECRET"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ALL_PARAMETERS = "[temperature, max_tokens, top_p, stop, seed, response_format]"


def config(base_url: str) -> str:
    return f"""
    targets:
      gpt:
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
      gpt-quick:
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
        timeout_s: 0.5
      gpt-capped:
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
        timeout_s: 2
      local:
        provider: openai_compatible
        model: llama-fake
        base_url: {base_url}/v1
      local-no-usage:
        provider: openai_compatible
        model: llama-fake
        base_url: {base_url}/v1
        openai: {{include_usage: false}}
    agents:
      chat:
        system_prompt: You are terse.
        route: [gpt]
        overridable_parameters: {ALL_PARAMETERS}
        tools:
          - name: get_weather
            description: Weather for a city.
            parameters: {json.dumps(WEATHER)}
        accepts_caller_tools: true
      quick:
        route: [gpt-quick]
      capped:
        route: [gpt-capped]
      local:
        system_prompt: You run locally.
        route: [local]
        overridable_parameters: {ALL_PARAMETERS}
      local-no-usage:
        route: [local-no-usage]
    """


@dataclass
class Rig:
    fake: OpenAIFake
    served: Served

    @property
    def client(self) -> AsyncClient:
        return self.served.client


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with (
        OpenAIFake() as fake,
        serve_config(config(fake.base_url), {"OPENAI_API_KEY": KEY}) as served,
    ):
        yield Rig(fake, served)


async def collect(
    client: AsyncClient, agent: str, conversation: object, **kw: object
) -> tuple[list[pb.StreamResponse], SwitchboardError | None]:
    """Every event of a stream, and the error that ended it (None if it finished)."""
    events: list[pb.StreamResponse] = []
    try:
        async for event in client.stream(agent, conversation, **kw):  # type: ignore[arg-type]
            events.append(event)  # noqa: PERF401 (keep what arrived before an error)
    except SwitchboardError as exc:
        return events, exc
    return events, None


def kinds(events: list[pb.StreamResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


# --- answers ---------------------------------------------------------------------------------


async def test_unary_text_answer_with_usage_and_target(rig: Rig) -> None:
    response = await rig.client.invoke("chat", "hello")

    assert response.message.content[0].text == "Hello from the fake OpenAI."
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 6
    assert response.usage.total_tokens == 18
    assert response.target == pb.Target(name="gpt", provider="openai", model="gpt-fake")
    (request,) = rig.fake.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "gpt-fake"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello"},
    ]
    assert "openai-organization" not in request.headers
    assert "openai-project" not in request.headers


async def test_stream_sends_text_deltas_then_usage_and_finish(rig: Rig) -> None:
    rig.fake.push(Scenario(text="one two three four five", pieces=5, usage=(3, 5)))
    events, error = await collect(rig.client, "chat", "count")

    assert error is None
    assert kinds(events) == ["start"] + ["text_delta"] * 5 + ["usage", "finish"]
    assert "".join(e.text_delta.text for e in events) == "one two three four five"
    assert events[-2].usage.output_tokens == 5
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP


async def test_folded_stream_equals_invoke(rig: Rig) -> None:
    calls = (FakeToolCall("get_weather", '{"city": "Paris"}', id="call_1"),)
    rig.fake.push(Scenario(text="Let me check.", tool_calls=calls))
    rig.fake.push(Scenario(text="Let me check.", tool_calls=calls))
    invoked = await rig.client.invoke("chat", "weather?", request_id="r1")
    folder = Folder()
    async for event in rig.client.stream("chat", "weather?", request_id="r1"):
        folder.add(event)

    assert folder.result() == invoked


async def test_tool_calls_unary_accumulate_arguments_across_chunks(rig: Rig) -> None:
    rig.fake.push(
        Scenario(
            text="",
            tool_calls=(
                FakeToolCall("get_weather", '{"city": "Paris", "unit": "celsius"}', id="call_a"),
                FakeToolCall("get_weather", '{"city": "Oslo"}', id="call_b"),
            ),
        )
    )
    response = await rig.client.invoke("chat", "weather in Paris and Oslo?")

    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert not response.message.content
    assert [(c.id, c.name, json.loads(c.arguments_json)) for c in response.message.tool_calls] == [
        ("call_a", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_b", "get_weather", {"city": "Oslo"}),
    ]


async def test_tool_calls_streamed_as_deltas(rig: Rig) -> None:
    rig.fake.push(
        Scenario(text="", tool_calls=(FakeToolCall("get_weather", '{"city": "Lima"}', "call_z"),))
    )
    events, error = await collect(rig.client, "chat", "weather in Lima?")

    assert error is None
    deltas = [e.tool_call_delta for e in events if e.WhichOneof("event") == "tool_call_delta"]
    assert len(deltas) == 4  # the first names the call, three pieces of arguments follow
    assert (deltas[0].index, deltas[0].id, deltas[0].name) == (0, "call_z", "get_weather")
    assert all(d.index == 0 and not d.id and not d.name for d in deltas[1:])
    assert "".join(d.arguments_delta for d in deltas) == '{"city": "Lima"}'
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_parameters_and_tools_reach_the_wire(rig: Rig) -> None:
    caller_tool = pb.Tool(name="lookup", description="Look something up.")
    caller_tool.parameters.update({"type": "object", "properties": {"q": {"type": "string"}}})
    parameters = pb.Parameters(temperature=0.3, top_p=0.9, max_tokens=77, stop=["END"], seed=42)
    await rig.client.invoke("chat", "hi", parameters=parameters, tools=[caller_tool])

    body = rig.fake.received[-1].body
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["max_completion_tokens"] == 77
    assert "max_tokens" not in body
    assert body["stop"] == ["END"]
    assert body["seed"] == 42
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city.",
                "parameters": WEATHER,
            },
        },
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look something up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        },
    ]


async def test_tool_results_and_images_map_to_the_wire(rig: Rig) -> None:
    conversation = [
        user("what is in this picture, and the weather?"),
        pb.Message(
            role=pb.ROLE_ASSISTANT,
            tool_calls=[
                pb.ToolCall(id="call_1", name="get_weather", arguments_json='{"city":"Rome"}')
            ],
        ),
        pb.Message(
            role=pb.ROLE_TOOL, tool_call_id="call_1", content=[pb.ContentPart(text="sunny, 24C")]
        ),
        pb.Message(
            role=pb.ROLE_USER,
            content=[
                pb.ContentPart(text="and this?"),
                pb.ContentPart(image=pb.Image(data=b"\x89PNG", media_type="image/png")),
                pb.ContentPart(image=pb.Image(url="https://example.com/cat.jpg")),
            ],
        ),
    ]
    await rig.client.invoke("chat", conversation)

    messages = rig.fake.received[-1].body["messages"]
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            }
        ],
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"}
    assert messages[4]["content"] == [
        {"type": "text", "text": "and this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


async def test_structured_output_json_schema(rig: Rig) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    fmt = pb.ResponseFormat(
        type=pb.ResponseFormat.TYPE_JSON_SCHEMA, schema_name="reply", strict=True
    )
    fmt.json_schema.update(schema)
    rig.fake.push(Scenario(text='{"answer": "42"}'))
    response = await rig.client.invoke(
        "chat", "answer in JSON", parameters=pb.Parameters(response_format=fmt)
    )

    assert json.loads(response.message.content[0].text) == {"answer": "42"}
    assert rig.fake.received[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": True},
    }


async def test_structured_output_json_object(rig: Rig) -> None:
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT)
    await rig.client.invoke("chat", "JSON please", parameters=pb.Parameters(response_format=fmt))

    assert rig.fake.received[-1].body["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("length", pb.FINISH_REASON_LENGTH),
        ("content_filter", pb.FINISH_REASON_CONTENT_FILTER),
        ("stop", pb.FINISH_REASON_STOP),
    ],
)
async def test_finish_reasons_are_normalised(rig: Rig, finish: str, expected: int) -> None:
    rig.fake.push(Scenario(finish_reason=finish))
    response = await rig.client.invoke("chat", "hi")

    assert response.finish_reason == expected


async def test_cached_tokens_are_reported(rig: Rig) -> None:
    rig.fake.push(Scenario(usage=(100, 4), cached_tokens=64))
    response = await rig.client.invoke("chat", "hi")

    assert response.usage.cached_input_tokens == 64


# --- openai_compatible ----------------------------------------------------------------------


async def test_compatible_target_without_key_sends_placeholder_and_max_tokens(rig: Rig) -> None:
    response = await rig.client.invoke("local", "hi", parameters=pb.Parameters(max_tokens=9))

    assert response.target.provider == "openai_compatible"
    request = rig.fake.received[-1]
    assert request.headers["authorization"] == "Bearer no-key"
    assert request.body["model"] == "llama-fake"
    assert request.body["max_tokens"] == 9
    assert "max_completion_tokens" not in request.body


async def test_compatible_target_without_usage_chunk(rig: Rig) -> None:
    response = await rig.client.invoke("local-no-usage", "hi")

    assert "stream_options" not in rig.fake.received[-1].body
    assert response.message.content[0].text == "Hello from the fake OpenAI."
    assert response.usage.total_tokens == 0


# --- the one client per target ----------------------------------------------------------------


async def test_one_client_and_connection_reused_across_calls(rig: Rig) -> None:
    provider = rig.served.app.providers["gpt"]
    client_before = provider.client  # type: ignore[attr-defined]
    for _ in range(3):
        await rig.client.invoke("chat", "hi")
    async for _ in rig.client.stream("chat", "hi"):
        pass

    assert provider.client is client_before  # type: ignore[attr-defined]
    assert [r.connection for r in rig.fake.received] == [1, 1, 1, 1]
    assert rig.fake.connections == 1


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "code", "says", "retry_after"),
    [
        pytest.param(
            Scenario(
                status=400,
                error={"message": "'temperature' is too high", "type": "invalid_request_error"},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'temperature' is too high",
            None,
            id="400",
        ),
        pytest.param(
            Scenario(
                status=422, error={"message": "unprocessable", "type": "invalid_request_error"}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unprocessable",
            None,
            id="422",
        ),
        pytest.param(
            Scenario(
                status=401,
                error={
                    "message": f"Incorrect API key provided: {KEY}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                },
            ),
            grpc.StatusCode.INTERNAL,
            "upstream rejected Switchboard's credentials for target 'gpt'",
            None,
            id="401",
        ),
        pytest.param(
            Scenario(
                status=403, error={"message": "Country not supported", "type": "permission_error"}
            ),
            grpc.StatusCode.INTERNAL,
            "credentials for target 'gpt'",
            None,
            id="403",
        ),
        pytest.param(
            Scenario(
                status=404,
                error={
                    "message": "The model `gpt-fake` does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                },
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "does not know model 'gpt-fake'",
            None,
            id="404",
        ),
        pytest.param(
            Scenario(status=429, headers={"retry-after": "7"}),
            grpc.StatusCode.UNAVAILABLE,
            "rate limiting",
            7.0,
            id="429-retry-after",
        ),
        pytest.param(
            Scenario(status=429, headers={"retry-after-ms": "1500", "retry-after": "9"}),
            grpc.StatusCode.UNAVAILABLE,
            "rate limiting",
            1.5,
            id="429-retry-after-ms",
        ),
        pytest.param(
            Scenario(
                status=429,
                headers={"retry-after": "20"},
                error={
                    "message": "You exceeded your current quota, please check your plan.",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                },
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "quota or spend limit is exhausted",
            None,
            id="429-quota",
        ),
        pytest.param(
            Scenario(status=500),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 500",
            None,
            id="500",
        ),
        pytest.param(
            Scenario(status=503, headers={"retry-after": "2"}),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 503",
            2.0,
            id="503",
        ),
    ],
)
async def test_upstream_errors_map_to_statuses(
    rig: Rig, scenario: Scenario, code: grpc.StatusCode, says: str, retry_after: float | None
) -> None:
    for call in ("invoke", "stream"):
        rig.fake.push(scenario)
        if call == "invoke":
            with pytest.raises(SwitchboardError) as caught:
                await rig.client.invoke("chat", "hi")
            error = caught.value
        else:
            events, stream_error = await collect(rig.client, "chat", "hi")
            assert events == []
            assert stream_error is not None
            error = stream_error

        assert error.code == code, call
        assert says in error.message
        assert error.retry_after_s == retry_after
        assert KEY not in error.message
        assert "sk-test" not in error.message


async def test_quota_error_carries_quota_failure_not_retry_info(rig: Rig) -> None:
    rig.fake.push(
        Scenario(
            status=429,
            headers={"retry-after": "20"},
            error={"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"},
        )
    )
    with pytest.raises(SwitchboardError) as caught:
        await rig.client.invoke("chat", "hi")

    assert caught.value.retry_after_s is None
    assert [v.subject for v in caught.value.violations] == ["target:gpt"]


async def test_upstream_message_is_sanitised_and_cut(rig: Rig) -> None:
    message = f"bad request for key {KEY} (Authorization: Bearer {KEY}) " + "x" * 2000
    rig.fake.push(Scenario(status=400, error={"message": message, "type": "invalid_request_error"}))
    with pytest.raises(SwitchboardError) as caught:
        await rig.client.invoke("chat", "hi")

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert KEY not in caught.value.message
    assert "***" in caught.value.message
    assert len(caught.value.message) < 500


# --- truncated and failing streams ----------------------------------------------------------


async def test_disconnect_mid_stream_is_unavailable_after_the_deltas(rig: Rig) -> None:
    rig.fake.push(Scenario(text="a b c d e f", pieces=6, disconnect_after=4))
    events, error = await collect(rig.client, "chat", "hi")

    assert isinstance(error, UnavailableError)
    assert kinds(events) == ["start", "text_delta", "text_delta", "text_delta"]
    assert "lost before the answer finished" in error.message


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(Scenario(omit_finish=True, omit_usage=True, omit_done=True), id="no-finish"),
        pytest.param(Scenario(omit_usage=True, omit_done=True), id="no-usage"),
        pytest.param(Scenario(omit_finish=True), id="usage-but-no-finish"),
    ],
)
async def test_stream_ending_before_it_finished_is_unavailable(
    rig: Rig, scenario: Scenario
) -> None:
    rig.fake.push(scenario, scenario)
    events, error = await collect(rig.client, "chat", "hi")

    assert isinstance(error, UnavailableError)
    assert "ended before it finished" in error.message
    assert "finish" not in kinds(events)
    assert "".join(e.text_delta.text for e in events) == "Hello from the fake OpenAI."
    with pytest.raises(UnavailableError):
        await rig.client.invoke("chat", "hi")


async def test_error_event_mid_stream_ends_the_stream_with_a_status(rig: Rig) -> None:
    rig.fake.push(Scenario(text="a b c d", pieces=4, error_after=3))
    events, error = await collect(rig.client, "chat", "hi")

    assert isinstance(error, UnavailableError)
    assert kinds(events) == ["start", "text_delta", "text_delta"]
    assert "error while processing your request" in error.message


async def test_target_timeout_is_deadline_exceeded_and_closes_the_request(rig: Rig) -> None:
    rig.fake.push(Scenario(hang=True))
    with pytest.raises(DeadlineExceededError) as caught:
        await rig.client.invoke("quick", "hi", timeout=30)

    assert "timeout_s of 0.5s" in caught.value.message
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_slow_chunks_past_the_target_timeout_are_deadline_exceeded(rig: Rig) -> None:
    # The first chunks come at once, the rest too slowly: the limit covers the whole answer.
    rig.fake.push(Scenario(text="word " * 40, pieces=40, chunk_delay_s=0.25))
    events, error = await collect(rig.client, "capped", "hi", timeout=60)

    assert isinstance(error, DeadlineExceededError)
    assert "timeout_s of 2s" in error.message
    assert kinds(events)[:2] == ["start", "text_delta"]
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_callers_deadline_bounds_the_upstream_call(rig: Rig) -> None:
    rig.fake.push(Scenario(hang=True))
    with pytest.raises(DeadlineExceededError):
        await rig.client.invoke("chat", "hi", timeout=0.5)

    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_cancelling_the_stream_closes_the_upstream_response(rig: Rig) -> None:
    rig.fake.push(Scenario(text="word " * 200, pieces=200, chunk_delay_s=0.05))
    async for event in rig.client.stream("chat", "talk a lot"):
        if event.WhichOneof("event") == "text_delta":
            break

    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)
    assert rig.fake.completed == 0


async def test_unreachable_upstream_is_unavailable() -> None:
    async with OpenAIFake() as fake:
        url = fake.base_url
    # The fake is gone: nothing listens on its port any more.
    async with serve_config(config(url), {"OPENAI_API_KEY": KEY}) as served:
        with pytest.raises(UnavailableError) as caught:
            await served.client.invoke("chat", "hi")

    assert "connection to the upstream failed" in caught.value.message


async def test_tool_arguments_struct_roundtrip_is_not_required(rig: Rig) -> None:
    # A caller tool without parameters is offered with an empty object schema.
    await rig.client.invoke(
        "chat", "hi", tools=[pb.Tool(name="ping", parameters=struct_pb2.Struct())]
    )

    tools = rig.fake.received[-1].body["tools"]
    assert tools[-1] == {
        "type": "function",
        "function": {"name": "ping", "parameters": {"type": "object"}},
    }


async def test_ambient_openai_environment_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK would read these; a target must be exactly what its config says.
    monkeypatch.setenv("OPENAI_ORG_ID", "org-ambient")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-ambient")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    async with (
        OpenAIFake() as fake,
        serve_config(config(fake.base_url), {"OPENAI_API_KEY": KEY}) as served,
    ):
        await served.client.invoke("chat", "hi")

    (request,) = fake.received
    assert "openai-organization" not in request.headers
    assert "openai-project" not in request.headers
