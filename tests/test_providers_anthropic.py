"""The anthropic provider through the real SDK against a fake Messages API: answers, the
wire request, one client per target."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import Folder, InvalidArgumentError, user

from tests.fakes.anthropic_fake import AnthropicFake, FakeToolUse, Scenario
from tests.provider_rigs import (
    ANTHROPIC_KEY,
    WEATHER,
    Rig,
    anthropic_rig,
    collect,
    kinds,
)

pytestmark = pytest.mark.asyncio

NOW = {"type": "object", "properties": {}}


@pytest.fixture
async def rig() -> AsyncIterator[Rig[AnthropicFake]]:
    async with anthropic_rig() as r:
        yield r


# --- answers ---------------------------------------------------------------------------------


async def test_unary_text_answer_with_system_prompt_on_top(rig: Rig[AnthropicFake]) -> None:
    response = await rig.client.invoke("chat", "hello")

    assert response.message.content[0].text == "Hello from the fake Claude."
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert (response.usage.input_tokens, response.usage.output_tokens) == (15, 8)
    assert response.target == pb.Target(name="claude", provider="anthropic", model="claude-fake")
    (request,) = rig.fake.received
    assert request.path == "/v1/messages"
    assert ANTHROPIC_KEY in (
        request.headers.get("x-api-key", "") + request.headers.get("authorization", "")
    )
    assert request.headers["anthropic-version"]
    assert request.body["model"] == "claude-fake"
    assert request.body["stream"] is True
    assert request.body["system"] == "You are terse."
    assert request.body["max_tokens"] == 4096
    assert request.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}
    ]


async def test_max_tokens_default_comes_from_the_target_config(rig: Rig[AnthropicFake]) -> None:
    await rig.client.invoke("short", "hello")

    body = rig.fake.received[-1].body
    assert body["max_tokens"] == 256
    assert "system" not in body


async def test_stream_sends_text_deltas_then_usage_and_finish(rig: Rig[AnthropicFake]) -> None:
    # Apart, so each is its own delta (deltas that arrive together are joined).
    rig.fake.push(Scenario(text="one two three", pieces=3, usage=(4, 3), chunk_delay_s=0.02))
    events, error = await collect(rig.client, "chat", "count")

    assert error is None
    assert kinds(events) == ["start", "text_delta", "text_delta", "text_delta", "usage", "finish"]
    assert "".join(e.text_delta.text for e in events) == "one two three"
    assert events[-2].usage.input_tokens == 4
    assert events[-2].usage.output_tokens == 3
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP


async def test_tool_use_streamed_as_deltas_numbered_from_zero(rig: Rig[AnthropicFake]) -> None:
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


async def test_tool_use_unary_equals_folded_stream(rig: Rig[AnthropicFake]) -> None:
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


async def test_tool_use_without_arguments_gives_an_empty_object(rig: Rig[AnthropicFake]) -> None:
    rig.fake.push(Scenario(text="", tool_uses=(FakeToolUse("now", "", id="toolu_e"),)))
    response = await rig.client.invoke("chat", "what time is it?")

    assert response.message.tool_calls[0].arguments_json == "{}"
    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_conversation_maps_to_messages_api_shape(rig: Rig[AnthropicFake]) -> None:
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
        {"name": "get_weather", "description": "Weather for a city.", "input_schema": WEATHER},
        {"name": "now", "description": "The time.", "input_schema": NOW},
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
async def test_stop_reasons_are_normalised(
    rig: Rig[AnthropicFake], stop_reason: str, expected: int
) -> None:
    rig.fake.push(Scenario(stop_reason=stop_reason))
    response = await rig.client.invoke("chat", "hi")

    assert response.finish_reason == expected


async def test_cache_read_tokens_count_as_input(rig: Rig[AnthropicFake]) -> None:
    rig.fake.push(Scenario(usage=(10, 2), cache_read_tokens=90))
    response = await rig.client.invoke("chat", "hi")

    assert response.usage.input_tokens == 100
    assert response.usage.cached_input_tokens == 90


# --- structured output ----------------------------------------------------------------------


def _json_schema(schema: dict[str, object]) -> pb.Parameters:
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_SCHEMA, schema_name="reply")
    fmt.json_schema.update(schema)
    return pb.Parameters(response_format=fmt)


async def test_json_schema_becomes_output_config_format(rig: Rig[AnthropicFake]) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 500}},
        "required": ["answer"],
    }
    rig.fake.push(Scenario(text='{"answer": "42"}'))
    response = await rig.client.invoke("chat", "JSON please", parameters=_json_schema(schema))

    assert json.loads(response.message.content[0].text) == {"answer": "42"}
    assert response.finish_reason == pb.FINISH_REASON_STOP
    body = rig.fake.received[-1].body
    # The SDK's transform_schema: objects closed, unenforced constraints moved to descriptions.
    assert body["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"answer": {"type": "string", "description": "{maxLength: 500}"}},
                "additionalProperties": False,
                "required": ["answer"],
            },
        }
    }
    assert "tool_choice" not in body


async def test_json_object_is_answered_through_a_forced_tool(rig: Rig[AnthropicFake]) -> None:
    rig.fake.push(
        Scenario(text="", tool_uses=(FakeToolUse("switchboard_json_object", '{"a": [1, 2]}'),))
    )
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT)
    events, error = await collect(
        rig.client, "json", "JSON please", parameters=pb.Parameters(response_format=fmt)
    )

    assert error is None
    assert "tool_call_delta" not in kinds(events)
    text = "".join(e.text_delta.text for e in events)
    assert json.loads(text) == {"a": [1, 2]}
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP
    body = rig.fake.received[-1].body
    assert [t["name"] for t in body["tools"]] == ["switchboard_json_object"]
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "tool", "name": "switchboard_json_object"}


async def test_json_object_beside_agent_tools_lets_the_model_call_them(
    rig: Rig[AnthropicFake],
) -> None:
    rig.fake.push(Scenario(text="", tool_uses=(FakeToolUse("get_weather", '{"city": "Oslo"}'),)))
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT)
    response = await rig.client.invoke(
        "chat", "weather as JSON", parameters=pb.Parameters(response_format=fmt)
    )

    assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert [c.name for c in response.message.tool_calls] == ["get_weather"]
    body = rig.fake.received[-1].body
    assert [t["name"] for t in body["tools"]] == ["get_weather", "now", "switchboard_json_object"]
    assert body["tool_choice"] == {"type": "any"}


async def test_schema_the_messages_api_cannot_take_is_invalid_argument_before_any_call(
    rig: Rig[AnthropicFake],
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await rig.client.invoke(
            "chat", "JSON please", parameters=_json_schema({"properties": {"a": {}}})
        )

    assert [v.subject for v in caught.value.violations] == [
        "parameters.response_format.json_schema"
    ]
    assert "Messages API cannot take this schema" in caught.value.message
    assert rig.fake.received == []


async def test_invalid_tool_call_arguments_in_history_are_invalid_argument(
    rig: Rig[AnthropicFake],
) -> None:
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


async def test_one_client_and_connection_reused_across_calls(rig: Rig[AnthropicFake]) -> None:
    provider = rig.served.app.providers["claude"]
    client_before = provider.client  # type: ignore[attr-defined]
    for _ in range(3):
        await rig.client.invoke("chat", "hi")

    assert provider.client is client_before  # type: ignore[attr-defined]
    assert [r.connection for r in rig.fake.received] == [1, 1, 1]
    assert rig.fake.connections == 1
