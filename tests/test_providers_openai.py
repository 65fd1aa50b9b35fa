"""The openai and openai_compatible providers through the real SDK against a fake upstream:
answers, the wire request, one client per target."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from google.protobuf import struct_pb2
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import Folder, user

from tests.fakes.openai_fake import FakeToolCall, OpenAIFake, Scenario
from tests.harness import serve_config
from tests.provider_rigs import (
    OPENAI_KEY,
    WEATHER,
    Rig,
    collect,
    kinds,
    openai_config,
    openai_rig,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def rig() -> AsyncIterator[Rig[OpenAIFake]]:
    async with openai_rig() as r:
        yield r


# --- answers ---------------------------------------------------------------------------------


async def test_unary_text_answer_with_usage_and_target(rig: Rig[OpenAIFake]) -> None:
    response = await rig.client.invoke("chat", "hello")

    assert response.message.content[0].text == "Hello from the fake OpenAI."
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 6
    assert response.usage.total_tokens == 18
    assert response.target == pb.Target(name="gpt", provider="openai", model="gpt-fake")
    (request,) = rig.fake.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.body["model"] == "gpt-fake"
    # Invoke takes the answer whole and nothing times its first token: one non-streamed
    # completion, cheaper to read than a stream of chunks.
    assert "stream" not in request.body
    assert "stream_options" not in request.body
    assert request.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello"},
    ]
    assert "openai-organization" not in request.headers
    assert "openai-project" not in request.headers


async def test_unary_answer_streams_when_a_first_token_timeout_applies(
    rig: Rig[OpenAIFake],
) -> None:
    """A first-token timeout is measured on the stream: such a target is asked to stream even
    for Invoke, and the answer is the same."""
    response = await rig.client.invoke("chat-streamed", "hello")

    assert response.message.content[0].text == "Hello from the fake OpenAI."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 6)
    (request,) = rig.fake.received
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


async def test_stream_sends_text_deltas_then_usage_and_finish(rig: Rig[OpenAIFake]) -> None:
    # Apart, so each is its own delta (deltas that arrive together are joined).
    rig.fake.push(
        Scenario(text="one two three four five", pieces=5, usage=(3, 5), chunk_delay_s=0.02)
    )
    events, error = await collect(rig.client, "chat", "count")

    assert error is None
    assert kinds(events) == ["start"] + ["text_delta"] * 5 + ["usage", "finish"]
    assert "".join(e.text_delta.text for e in events) == "one two three four five"
    assert events[-2].usage.output_tokens == 5
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP


async def test_folded_stream_equals_invoke(rig: Rig[OpenAIFake]) -> None:
    calls = (FakeToolCall("get_weather", '{"city": "Paris"}', id="call_1"),)
    rig.fake.push(Scenario(text="Let me check.", tool_calls=calls))
    rig.fake.push(Scenario(text="Let me check.", tool_calls=calls))
    invoked = await rig.client.invoke("chat", "weather?", request_id="r1")
    folder = Folder()
    async for event in rig.client.stream("chat", "weather?", request_id="r1"):
        folder.add(event)

    assert folder.result() == invoked


async def test_tool_calls_unary_accumulate_arguments_across_chunks(rig: Rig[OpenAIFake]) -> None:
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


async def test_a_tool_call_streamed_in_pieces_is_sent_whole_once_checked(
    rig: Rig[OpenAIFake],
) -> None:
    rig.fake.push(
        Scenario(
            text="",
            tool_calls=(FakeToolCall("get_weather", '{"city": "Lima"}', "call_z"),),
            chunk_delay_s=0.02,  # apart: pieces that arrive together are joined
        )
    )
    events, error = await collect(rig.client, "chat", "weather in Lima?")

    assert error is None
    deltas = [e.tool_call_delta for e in events if e.WhichOneof("event") == "tool_call_delta"]
    # The upstream sent a name and three pieces of arguments; the tool_call stage checks a
    # call whole (offered, valid under its schema, guards) before any of it is sent.
    assert len(rig.fake.received) == 1
    (delta,) = deltas
    assert (delta.index, delta.id, delta.name) == (0, "call_z", "get_weather")
    assert delta.arguments_delta == '{"city": "Lima"}'
    assert events[-1].finish.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_parameters_and_tools_reach_the_wire(rig: Rig[OpenAIFake]) -> None:
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


async def test_tool_results_and_images_map_to_the_wire(rig: Rig[OpenAIFake]) -> None:
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


async def test_structured_output_json_schema(rig: Rig[OpenAIFake]) -> None:
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


async def test_structured_output_json_object(rig: Rig[OpenAIFake]) -> None:
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
async def test_finish_reasons_are_normalised(
    rig: Rig[OpenAIFake], finish: str, expected: int
) -> None:
    rig.fake.push(Scenario(finish_reason=finish))
    response = await rig.client.invoke("chat", "hi")

    assert response.finish_reason == expected


async def test_cached_tokens_are_reported(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(Scenario(usage=(100, 4), cached_tokens=64))
    response = await rig.client.invoke("chat", "hi")

    assert response.usage.cached_input_tokens == 64


# --- openai_compatible ----------------------------------------------------------------------


async def test_compatible_target_without_key_sends_placeholder_and_max_tokens(
    rig: Rig[OpenAIFake],
) -> None:
    response = await rig.client.invoke("local", "hi", parameters=pb.Parameters(max_tokens=9))

    assert response.target.provider == "openai_compatible"
    request = rig.fake.received[-1]
    assert request.headers["authorization"] == "Bearer no-key"
    assert request.body["model"] == "llama-fake"
    assert request.body["max_tokens"] == 9
    assert "max_completion_tokens" not in request.body


async def test_compatible_target_without_usage_chunk(rig: Rig[OpenAIFake]) -> None:
    events, error = await collect(rig.client, "local-no-usage", "hi")

    assert error is None
    assert "stream_options" not in rig.fake.received[-1].body
    assert "".join(e.text_delta.text for e in events) == "Hello from the fake OpenAI."
    # Nothing reported: estimated from the prompt ("hi") and the 27-byte answer, and marked.
    usage = events[-2].usage
    assert usage.estimated
    assert (usage.input_tokens, usage.output_tokens) == (5, 9)


async def test_non_streamed_answer_without_usage_is_estimated(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(Scenario(omit_usage=True))
    response = await rig.client.invoke("local", "hi")

    assert "stream" not in rig.fake.received[-1].body
    assert response.message.content[0].text == "Hello from the fake OpenAI."
    assert response.usage.estimated
    # "hi" and the system prompt (two messages), the 27-byte answer: 9 tokens.
    assert response.usage.output_tokens == 9


# --- the one client per target ----------------------------------------------------------------


async def test_one_client_and_connection_reused_across_calls(rig: Rig[OpenAIFake]) -> None:
    provider = rig.served.app.providers["gpt"]
    client_before = provider.client  # type: ignore[attr-defined]
    for _ in range(3):
        await rig.client.invoke("chat", "hi")
    async for _ in rig.client.stream("chat", "hi"):
        pass

    assert provider.client is client_before  # type: ignore[attr-defined]
    assert [r.connection for r in rig.fake.received] == [1, 1, 1, 1]
    assert rig.fake.connections == 1


async def test_tool_arguments_struct_roundtrip_is_not_required(rig: Rig[OpenAIFake]) -> None:
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
        serve_config(openai_config(fake.base_url), {"OPENAI_API_KEY": OPENAI_KEY}) as served,
    ):
        await served.client.invoke("chat", "hi")

    (request,) = fake.received
    assert "openai-organization" not in request.headers
    assert "openai-project" not in request.headers


async def test_concurrent_calls_share_the_pool(rig: Rig[OpenAIFake]) -> None:
    rig.fake.default = Scenario(first_chunk_delay_s=0.05)
    for _ in range(2):
        responses = await asyncio.gather(*(rig.client.invoke("chat", "hi") for _ in range(10)))
        assert all(r.finish_reason == pb.FINISH_REASON_STOP for r in responses)

    # At most 10 calls were ever in flight: 20 requests on at most 10 pooled connections.
    assert len(rig.fake.received) == 20
    assert rig.fake.connections <= 10
