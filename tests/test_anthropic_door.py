"""The Anthropic-compatible door (``POST /v1/messages``), driven by the real ``anthropic`` SDK
(and curl) against the real server: Anthropic's shapes, stream events and errors, over the
same chain (auth, tenancy, limits, metrics) and runner as gRPC."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anthropic
import pytest
from prometheus_client import generate_latest

from tests.chain_helpers import make_keys, sample
from tests.harness import Served, serve_config

CONFIG = """
server:
  http: {port: 0}
targets:
  mock-echo: {provider: mock, model: echo}
  mock-compose: {provider: mock, model: compose}
agents:
  echo:
    route: [mock-echo]
    overridable_parameters: [max_tokens, stop, temperature, top_p, response_format]
  assistant:
    route: [mock-compose]
    accepts_caller_tools: true
    parameters: {max_tokens: 300}
"""
WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    },
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()


def sdk(served: Served, key: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=served.http_url, api_key=key, max_retries=0, timeout=30
    )


def error_of(error: anthropic.APIStatusError) -> dict[str, Any]:
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    inner: dict[str, Any] = error.body["error"]
    return inner


async def test_a_message_through_the_anthropic_sdk() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.messages.create(
            model="echo",
            max_tokens=50,
            system="be brief",
            messages=[
                {"role": "user", "content": "first turn"},
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {
                            "type": "text",
                            "text": "hello there",
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                },
            ],
            metadata={"user_id": "alice"},
            extra_body={"temperature": 0.5},  # this SDK release leaves it out of create()
        )
    assert answer.type == "message"
    assert answer.role == "assistant"
    assert answer.model == "echo"
    assert answer.id.startswith("msg_")
    assert answer._request_id == answer.id.removeprefix("msg_")  # the request-id header
    assert [block.type for block in answer.content] == ["text"]
    assert answer.content[0].text == "hello there"  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"
    assert answer.usage.output_tokens == 2
    assert answer.usage.input_tokens > 0
    assert answer.usage.cache_read_input_tokens == 0


async def test_output_config_format_is_the_response_format() -> None:
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}}
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.messages.create(
            model="echo",
            max_tokens=50,
            messages=[{"role": "user", "content": "as json"}],
            output_config={"format": {"type": "json_schema", "schema": schema}},
        )
    # The echo model answers in JSON only when the format reached it.
    assert json.loads(answer.content[0].text) == {"reply": "as json"}  # type: ignore[union-attr]


async def test_max_tokens_cuts_the_answer_and_says_so() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.messages.create(
            model="echo", max_tokens=2, messages=[{"role": "user", "content": "one two three"}]
        )
    assert answer.stop_reason == "max_tokens"
    assert answer.content[0].text.split() == ["one", "two"]  # type: ignore[union-attr]


async def test_max_tokens_where_the_agent_does_not_let_callers_set_it() -> None:
    """The agent's own limit (300) applies; asking for fewer would be broken silently."""
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.messages.create(
            model="assistant", max_tokens=4096, messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.stop_reason == "end_turn"
        with pytest.raises(anthropic.BadRequestError) as info:
            await client.messages.create(
                model="assistant", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )
    error = error_of(info.value)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("max_tokens: agent 'assistant' does not let callers")
    assert "300" in error["message"]


async def test_a_streamed_message_has_anthropics_events_in_order() -> None:
    hi: Any = [{"role": "user", "content": "streamed words arrive"}]
    async with (
        serve_config(CONFIG, http=True) as served,
        sdk(served) as client,
        client.messages.stream(model="echo", max_tokens=50, messages=hi) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds) == {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "text",
        "content_block_stop",
        "message_delta",
        "message_stop",
    }
    assert final.content[0].text == "streamed words arrive"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    assert final.usage.input_tokens > 0
    assert final.id.startswith("msg_")


async def test_tool_use_both_ways_and_the_tool_result_back() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.messages.create(
            model="assistant",
            max_tokens=1000,
            messages=[{"role": "user", "content": "call get_weather Paris"}],
            tools=[WEATHER],
            tool_choice={"type": "auto"},
        )
        assert answer.stop_reason == "tool_use"
        (call,) = [block for block in answer.content if block.type == "tool_use"]
        assert call.name == "get_weather"
        assert call.input == {"input": "Paris"}

        async with client.messages.stream(
            model="assistant",
            max_tokens=1000,
            messages=[{"role": "user", "content": "call get_weather Oslo"}],
            tools=[WEATHER],
        ) as stream:
            streamed = await stream.get_final_message()
        (streamed_call,) = [block for block in streamed.content if block.type == "tool_use"]
        assert streamed_call.input == {"input": "Oslo"}
        assert streamed.stop_reason == "tool_use"

        follow = await client.messages.create(
            model="assistant",
            max_tokens=1000,
            messages=[
                {"role": "user", "content": "call get_weather Paris"},
                {"role": "assistant", "content": [call.model_dump()]},  # type: ignore[list-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"},
                        {"type": "text", "text": "and now?"},
                    ],
                },
            ],
            tools=[WEATHER],
        )
    assert follow.stop_reason == "end_turn"
    assert follow.content[0].text  # type: ignore[union-attr]


async def test_a_bad_body_is_400_in_anthropics_names() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        hi: Any = [{"role": "user", "content": "x"}]
        for kwargs, field in [
            ({"extra_body": {"top_k": 5}}, "top_k"),
            ({"output_config": {"effort": "high"}}, "output_config.effort"),
            ({"tool_choice": {"type": "any"}}, "tool_choice"),
            ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
            ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "thinking"),
            ({"extra_body": {"frequency_bias": 1}}, "frequency_bias"),
            # The servicer's own checks, renamed from the contract's fields:
            ({"stop_sequences": ["x"] * 5}, "stop_sequences"),
            (
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "look"},
                                {
                                    "type": "image",
                                    "source": {"type": "url", "url": "http://169.254.169.254/x"},
                                },
                            ],
                        }
                    ]
                },
                "messages[0].content[1].source.url",
            ),
        ]:
            with pytest.raises(anthropic.BadRequestError) as info:
                await client.messages.create(
                    **{"model": "echo", "max_tokens": 9, "messages": hi, **kwargs}
                )
            error = error_of(info.value)
            assert error["type"] == "invalid_request_error"
            assert error["message"].startswith(f"{field}: "), (field, error["message"])
            assert info.value.request_id  # in the body and the request-id header


async def test_an_unknown_agent_is_404_and_models_list_the_agents() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        with pytest.raises(anthropic.NotFoundError) as info:
            await client.messages.create(
                model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert error_of(info.value)["type"] == "not_found_error"
        assert info.value.error_code == "agent_not_found"
        assert info.value.request_id
        assert info.value.response.headers["x-request-id"] == info.value.request_id
        models = [m async for m in client.models.list()]
        assert sorted(m.id for m in models) == ["assistant", "echo"]
        assert all(m.type == "model" for m in models)
        assert (await client.models.retrieve("echo")).id == "echo"


AUTH = """
server:
  http: {{port: 0}}
auth: {{enabled: true, keys_file: {keys}}}
rate_limits:
  tenant: {{requests_per_min: 3}}
targets:
  mock-echo: {{provider: mock, model: echo}}
agents:
  echo: {{route: [mock-echo]}}
  assistant: {{route: [mock-echo]}}
"""


async def test_keys_tenancy_and_limits_are_the_grpc_doors(tmp_path: Path) -> None:
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("echo",)), ("globex", ("*",))])
    hi: Any = [{"role": "user", "content": "x"}]
    async with serve_config(AUTH.format(keys=keys_file), http=True) as served:
        async with sdk(served, "sb_nope") as client:
            with pytest.raises(anthropic.AuthenticationError) as unauth:
                await client.messages.create(model="echo", max_tokens=5, messages=hi)
            assert error_of(unauth.value)["type"] == "authentication_error"
        async with sdk(served, keys[0]) as acme:  # the key goes as x-api-key
            with pytest.raises(anthropic.PermissionDeniedError):
                await acme.messages.create(model="assistant", max_tokens=5, messages=hi)
            assert [m.id async for m in acme.models.list()] == ["echo"]
            # The refused call and the list took 2 of acme's 3 requests a minute.
            await acme.messages.create(model="echo", max_tokens=5, messages=hi)
            with pytest.raises(anthropic.RateLimitError) as limited:
                async with acme.messages.stream(model="echo", max_tokens=5, messages=hi) as s:
                    await s.get_final_message()
            assert int(limited.value.response.headers["retry-after"]) >= 1
            assert limited.value.error_code == "rate_limited"
        async with sdk(served, keys[1]) as globex:
            answer = await globex.messages.create(model="assistant", max_tokens=5, messages=hi)
            assert answer.content[0].text == "x"  # type: ignore[union-attr]
        exposition = generate_latest(served.app.metrics.registry).decode()
    calls = "switchboard_calls_total"
    labels = {"door": "anthropic", "tenant": "acme"}
    assert sample(exposition, calls, rpc_method="Invoke", code="OK", **labels) == 1
    assert sample(exposition, calls, rpc_method="Invoke", code="PERMISSION_DENIED", **labels) == 1
    assert sample(exposition, calls, rpc_method="Stream", code="RESOURCE_EXHAUSTED", **labels) == 1


FAULTS = """
server:
  http: {port: 0}
  default_deadline_s: 0.5
targets:
  down: {provider: mock, model: echo, mock: {fail_rate: 1.0, error: unavailable}}
  slow: {provider: mock, model: echo, mock: {hang: true}}
  drop: {provider: mock, model: echo, mock: {drop_after_tokens: 2}}
agents:
  down: {route: [down]}
  slow: {route: [slow]}
  drop: {route: [drop]}
"""


async def test_upstream_failures_are_overloaded_timeout_and_a_stream_error_event() -> None:
    hi: Any = [{"role": "user", "content": "a b c d e"}]
    async with serve_config(FAULTS, http=True) as served, sdk(served) as client:
        with pytest.raises(anthropic.OverloadedError) as down:
            await client.messages.create(model="down", max_tokens=5, messages=hi)
        assert error_of(down.value)["type"] == "overloaded_error"
        with pytest.raises(anthropic.GatewayTimeoutError) as slow:
            await client.messages.create(model="slow", max_tokens=5, messages=hi)
        assert error_of(slow.value)["type"] == "timeout_error"
        seen: list[str] = []

        async def read() -> None:
            async with client.messages.stream(model="drop", max_tokens=50, messages=hi) as s:
                async for text in s.text_stream:
                    seen.append(text)  # noqa: PERF401 (what came before the error counts)

        with pytest.raises(anthropic.APIStatusError) as dropped:
            await read()
    assert "".join(seen).split() == ["a", "b"]
    assert error_of(dropped.value)["type"] == "overloaded_error"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_json_and_sse() -> None:
    body = {"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hi curl"}]}
    async with serve_config(CONFIG, http=True) as served:
        url = served.http_url + "/v1/messages"

        def curl(*args: str) -> str:
            done = subprocess.run(
                ["curl", "-sS", "--max-time", "30", "-H", "content-type: application/json",
                 "-H", "anthropic-version: 2023-06-01", *args, url],
                capture_output=True, check=True,
            )  # fmt: skip
            return done.stdout.decode()

        plain = await asyncio.to_thread(curl, "-d", json.dumps(body))
        streamed = await asyncio.to_thread(
            curl, "-N", "-H", "x-request-id: curl-1", "-d", json.dumps({**body, "stream": True})
        )
    assert json.loads(plain)["content"] == [{"type": "text", "text": "hi curl"}]
    names = [line[7:] for line in streamed.splitlines() if line.startswith("event: ")]
    data = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: ")]
    assert names == [d["type"] for d in data]
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    assert data[0]["message"]["id"] == "msg_curl-1"
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    assert text == "hi curl"
