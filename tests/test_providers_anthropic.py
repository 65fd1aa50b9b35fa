"""The anthropic provider: the real SDK against a fake Messages API, seen through a real
grpc.aio server and the Python client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import (
    AsyncClient,
    DeadlineExceededError,
    Folder,
    InvalidArgumentError,
    SwitchboardError,
    UnavailableError,
    user,
)

from tests.fakes.anthropic_fake import AnthropicFake, FakeToolUse, Scenario
from tests.harness import Served, serve_config

pytestmark = pytest.mark.asyncio

KEY = "sk-ant-api03-test0123456789SECRET"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ALL_PARAMETERS = "[temperature, max_tokens, top_p, stop, seed, response_format]"


def config(base_url: str) -> str:
    return f"""
    targets:
      claude:
        provider: anthropic
        model: claude-fake
        base_url: {base_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
      claude-short:
        provider: anthropic
        model: claude-fake
        base_url: {base_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
        timeout_s: 0.5
        anthropic: {{max_tokens: 256}}
    agents:
      chat:
        system_prompt: You are terse.
        route: [claude]
        overridable_parameters: {ALL_PARAMETERS}
        tools:
          - name: get_weather
            description: Weather for a city.
            parameters: {json.dumps(WEATHER)}
      short:
        route: [claude-short]
    """


@dataclass
class Rig:
    fake: AnthropicFake
    served: Served

    @property
    def client(self) -> AsyncClient:
        return self.served.client


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with (
        AnthropicFake() as fake,
        serve_config(config(fake.base_url), {"ANTHROPIC_API_KEY": KEY}) as served,
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


async def test_unary_text_answer_with_system_prompt_on_top(rig: Rig) -> None:
    response = await rig.client.invoke("chat", "hello")

    assert response.message.content[0].text == "Hello from the fake Claude."
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert (response.usage.input_tokens, response.usage.output_tokens) == (15, 8)
    assert response.target == pb.Target(name="claude", provider="anthropic", model="claude-fake")
    (request,) = rig.fake.received
    assert request.path == "/v1/messages"
    assert KEY in (request.headers.get("x-api-key", "") + request.headers.get("authorization", ""))
    assert request.headers["anthropic-version"]
    assert request.body["model"] == "claude-fake"
    assert request.body["stream"] is True
    assert request.body["system"] == "You are terse."
    assert request.body["max_tokens"] == 4096
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}
    ]


async def test_max_tokens_default_comes_from_the_target_config(rig: Rig) -> None:
    await rig.client.invoke("short", "hello")

    body = rig.fake.received[-1].body
    assert body["max_tokens"] == 256
    assert "system" not in body


async def test_stream_sends_text_deltas_then_usage_and_finish(rig: Rig) -> None:
    rig.fake.push(Scenario(text="one two three", pieces=3, usage=(4, 3)))
    events, error = await collect(rig.client, "chat", "count")

    assert error is None
    assert kinds(events) == ["start", "text_delta", "text_delta", "text_delta", "usage", "finish"]
    assert "".join(e.text_delta.text for e in events) == "one two three"
    assert events[-2].usage.input_tokens == 4
    assert events[-2].usage.output_tokens == 3
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP


async def test_tool_use_streamed_as_deltas_numbered_from_zero(rig: Rig) -> None:
    rig.fake.push(
        Scenario(
            text="Checking.",
            tool_uses=(
                FakeToolUse("get_weather", '{"city": "Paris"}', id="toolu_a"),
                FakeToolUse("get_weather", '{"city": "Oslo"}', id="toolu_b"),
            ),
        )
    )
    events, error = await collect(rig.client, "chat", "weather?")

    assert error is None
    deltas = [e.tool_call_delta for e in events if e.WhichOneof("event") == "tool_call_delta"]
    firsts = [(d.index, d.id, d.name) for d in deltas if d.id]
    assert firsts == [(0, "toolu_a", "get_weather"), (1, "toolu_b", "get_weather")]
    assert "".join(d.arguments_delta for d in deltas if d.index == 0) == '{"city": "Paris"}'
    assert "".join(d.arguments_delta for d in deltas if d.index == 1) == '{"city": "Oslo"}'
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_tool_use_unary_equals_folded_stream(rig: Rig) -> None:
    uses = (FakeToolUse("get_weather", '{"city": "Rome"}', id="toolu_r"),)
    rig.fake.push(Scenario(text="", tool_uses=uses), Scenario(text="", tool_uses=uses))
    invoked = await rig.client.invoke("chat", "weather?", request_id="r1")
    folder = Folder()
    async for event in rig.client.stream("chat", "weather?", request_id="r1"):
        folder.add(event)

    assert folder.result() == invoked
    (call,) = invoked.message.tool_calls
    assert (call.id, call.name, json.loads(call.arguments_json)) == (
        "toolu_r",
        "get_weather",
        {"city": "Rome"},
    )
    assert invoked.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_tool_use_without_arguments_gives_an_empty_object(rig: Rig) -> None:
    rig.fake.push(Scenario(text="", tool_uses=(FakeToolUse("get_weather", "", id="toolu_e"),)))
    response = await rig.client.invoke("chat", "weather?")

    assert response.message.tool_calls[0].arguments_json == "{}"


async def test_conversation_maps_to_messages_api_shape(rig: Rig) -> None:
    conversation = [
        user("weather in Rome?"),
        pb.Message(
            role=pb.ROLE_ASSISTANT,
            content=[pb.ContentPart(text="Let me check.")],
            tool_calls=[
                pb.ToolCall(id="toolu_1", name="get_weather", arguments_json='{"city":"Rome"}'),
                pb.ToolCall(id="toolu_2", name="get_weather", arguments_json='{"city":"Milan"}'),
            ],
        ),
        pb.Message(
            role=pb.ROLE_TOOL, tool_call_id="toolu_1", content=[pb.ContentPart(text="sunny")]
        ),
        pb.Message(
            role=pb.ROLE_TOOL, tool_call_id="toolu_2", content=[pb.ContentPart(text="rain")]
        ),
        pb.Message(role=pb.ROLE_SYSTEM, content=[pb.ContentPart(text="Answer in French.")]),
        pb.Message(
            role=pb.ROLE_USER,
            content=[
                pb.ContentPart(text="and this picture?"),
                pb.ContentPart(image=pb.Image(data=b"\x89PNG", media_type="image/png")),
                pb.ContentPart(image=pb.Image(url="https://example.com/cat.jpg")),
            ],
        ),
    ]
    parameters = pb.Parameters(temperature=0.2, top_p=0.8, max_tokens=99, stop=["END"], seed=7)
    await rig.client.invoke("chat", conversation, parameters=parameters)

    body = rig.fake.received[-1].body
    assert body["system"] == "You are terse.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Milan"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "rain"},
                {"type": "text", "text": "and this picture?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        },
    ]
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city.", "input_schema": WEATHER}
    ]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.8, 99)
    assert body["stop_sequences"] == ["END"]
    assert "seed" not in body


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", pb.FINISH_REASON_STOP),
        ("stop_sequence", pb.FINISH_REASON_STOP),
        ("max_tokens", pb.FINISH_REASON_LENGTH),
        ("tool_use", pb.FINISH_REASON_TOOL_CALLS),
        ("refusal", pb.FINISH_REASON_CONTENT_FILTER),
    ],
)
async def test_stop_reasons_are_normalised(rig: Rig, stop_reason: str, expected: int) -> None:
    rig.fake.push(Scenario(stop_reason=stop_reason))
    response = await rig.client.invoke("chat", "hi")

    assert response.finish_reason == expected


async def test_cache_read_tokens_count_as_input(rig: Rig) -> None:
    rig.fake.push(Scenario(usage=(10, 2), cache_read_tokens=90))
    response = await rig.client.invoke("chat", "hi")

    assert response.usage.input_tokens == 100
    assert response.usage.cached_input_tokens == 90


@pytest.mark.parametrize(
    "fmt",
    [
        pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_SCHEMA, schema_name="reply"),
        pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT),
    ],
)
async def test_json_response_formats_are_invalid_argument_before_any_call(
    rig: Rig, fmt: pb.ResponseFormat
) -> None:
    if fmt.type == pb.ResponseFormat.TYPE_JSON_SCHEMA:
        fmt.json_schema.update({"type": "object"})
    with pytest.raises(InvalidArgumentError) as caught:
        await rig.client.invoke(
            "chat", "JSON please", parameters=pb.Parameters(response_format=fmt)
        )

    assert caught.value.message.startswith("parameters.response_format:")
    assert "does not support" in caught.value.message
    assert [v.subject for v in caught.value.violations] == ["parameters.response_format"]
    assert rig.fake.received == []


async def test_invalid_tool_call_arguments_in_history_are_invalid_argument(rig: Rig) -> None:
    conversation = [
        user("hi"),
        pb.Message(
            role=pb.ROLE_ASSISTANT,
            tool_calls=[pb.ToolCall(id="t", name="get_weather", arguments_json="not json")],
        ),
        pb.Message(role=pb.ROLE_TOOL, tool_call_id="t", content=[pb.ContentPart(text="ok")]),
    ]
    with pytest.raises(InvalidArgumentError) as caught:
        await rig.client.invoke("chat", conversation)

    assert caught.value.violations[0].subject == "messages[1].tool_calls[0].arguments_json"
    assert rig.fake.received == []


async def test_one_client_and_connection_reused_across_calls(rig: Rig) -> None:
    provider = rig.served.app.providers["claude"]
    client_before = provider.client  # type: ignore[attr-defined]
    for _ in range(3):
        await rig.client.invoke("chat", "hi")

    assert provider.client is client_before  # type: ignore[attr-defined]
    assert [r.connection for r in rig.fake.received] == [1, 1, 1]
    assert rig.fake.connections == 1


# --- errors -------------------------------------------------------------------------------------


def error(kind: str, message: str, code: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"type": kind, "message": message}
    if code:
        out["details"] = {"error_code": code}
    return out


@pytest.mark.parametrize(
    ("scenario", "code", "says", "retry_after"),
    [
        pytest.param(
            Scenario(
                status=400, error=error("invalid_request_error", "messages: roles must alternate")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "roles must alternate",
            None,
            id="400",
        ),
        pytest.param(
            Scenario(
                status=413, error=error("request_too_large", "Request exceeds the maximum size")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "maximum size",
            None,
            id="413",
        ),
        pytest.param(
            Scenario(status=401, error=error("authentication_error", f"invalid x-api-key {KEY}")),
            grpc.StatusCode.INTERNAL,
            "upstream rejected Switchboard's credentials for target 'claude'",
            None,
            id="401",
        ),
        pytest.param(
            Scenario(status=403, error=error("permission_error", "no access to this model")),
            grpc.StatusCode.INTERNAL,
            "credentials for target 'claude'",
            None,
            id="403",
        ),
        pytest.param(
            Scenario(status=404, error=error("not_found_error", "model: claude-fake")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "does not know model 'claude-fake'",
            None,
            id="404",
        ),
        pytest.param(
            Scenario(
                status=429,
                headers={"retry-after": "11"},
                error=error(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
            ),
            grpc.StatusCode.UNAVAILABLE,
            "rate limiting",
            11.0,
            id="429",
        ),
        pytest.param(
            Scenario(
                status=429,
                headers={"retry-after": "30"},
                error=error(
                    "rate_limit_error",
                    "You have reached your specified API usage limits.",
                    "enforced_spend_limit_reached",
                ),
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "spend limit is exhausted",
            None,
            id="429-spend-limit",
        ),
        pytest.param(
            Scenario(status=402, error=error("billing_error", "Your credit balance is too low")),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "credit balance is too low",
            None,
            id="402-billing",
        ),
        pytest.param(
            Scenario(status=500, error=error("api_error", "Internal server error")),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 500",
            None,
            id="500",
        ),
        pytest.param(
            Scenario(
                status=529,
                headers={"retry-after": "3"},
                error=error("overloaded_error", "Overloaded"),
            ),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 529",
            3.0,
            id="529",
        ),
    ],
)
async def test_upstream_errors_map_to_statuses(
    rig: Rig, scenario: Scenario, code: grpc.StatusCode, says: str, retry_after: float | None
) -> None:
    rig.fake.push(scenario, scenario)
    with pytest.raises(SwitchboardError) as caught:
        await rig.client.invoke("chat", "hi")
    events, stream_error = await collect(rig.client, "chat", "hi")

    for err in (caught.value, stream_error):
        assert err is not None
        assert err.code == code
        assert says in err.message
        assert err.retry_after_s == retry_after
        assert KEY not in err.message
    assert events == []


async def test_error_event_mid_stream_ends_the_stream_with_a_status(rig: Rig) -> None:
    # message_start, content_block_start, ping, then the first text delta: the error comes next.
    rig.fake.push(Scenario(text="a b c d", pieces=4, error_after=4))
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, UnavailableError)
    assert kinds(events) == ["start", "text_delta"]
    assert "HTTP 529" in err.message
    assert "Overloaded" in err.message


async def test_invalid_request_error_event_mid_stream_is_invalid_argument(rig: Rig) -> None:
    rig.fake.push(
        Scenario(error_after=4, stream_error=error("invalid_request_error", "prompt is too long"))
    )
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, InvalidArgumentError)
    assert "prompt is too long" in err.message
    assert kinds(events) == ["start", "text_delta"]


async def test_missing_message_stop_is_unavailable(rig: Rig) -> None:
    rig.fake.push(Scenario(omit_stop=True), Scenario(omit_stop=True))
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, UnavailableError)
    assert "no message_stop" in err.message
    assert "".join(e.text_delta.text for e in events) == "Hello from the fake Claude."
    assert "finish" not in kinds(events)
    with pytest.raises(UnavailableError):
        await rig.client.invoke("chat", "hi")


async def test_disconnect_mid_stream_is_unavailable_after_the_deltas(rig: Rig) -> None:
    rig.fake.push(Scenario(text="a b c d e f", pieces=6, disconnect_after=5))
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, UnavailableError)
    assert kinds(events) == ["start", "text_delta", "text_delta"]


async def test_target_timeout_is_deadline_exceeded_and_closes_the_request(rig: Rig) -> None:
    rig.fake.push(Scenario(hang=True))
    with pytest.raises(DeadlineExceededError) as caught:
        await rig.client.invoke("short", "hi", timeout=30)

    assert "timeout_s of 0.5s" in caught.value.message
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_cancelling_the_stream_closes_the_upstream_response(rig: Rig) -> None:
    rig.fake.push(Scenario(text="word " * 200, pieces=200, chunk_delay_s=0.05))
    async for event in rig.client.stream("chat", "talk a lot"):
        if event.WhichOneof("event") == "text_delta":
            break

    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)
    assert rig.fake.completed == 0


async def test_headers_then_silence_is_deadline_exceeded(rig: Rig) -> None:
    # The status line and headers come at once; the first event never comes in time.
    rig.fake.push(Scenario(first_chunk_delay_s=30))
    events, err = await collect(rig.client, "short", "hi", timeout=30)

    assert isinstance(err, DeadlineExceededError)
    assert events == []
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)
