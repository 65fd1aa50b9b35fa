"""The OpenAI-compatible door, driven by the real ``openai`` SDK (and curl) against the real
server: the same chain (auth, tenancy, limits, metrics) and the same runner as gRPC."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
from prometheus_client import generate_latest

from tests.chain_helpers import make_keys, sample
from tests.harness import Served, serve_config
from tests.waiting import wait_for

CONFIG = """
server:
  http: {port: 0}
targets:
  mock-echo: {provider: mock, model: echo}
  mock-compose: {provider: mock, model: compose}
agents:
  echo:
    route: [mock-echo]
    overridable_parameters: [max_tokens, stop, temperature, top_p, seed, response_format]
  assistant:
    route: [mock-compose]
    accepts_caller_tools: true
"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        },
    },
}


def message_of(error: openai.APIStatusError) -> str:
    """The error body's message (the SDK's ``message`` adds "Error code: 400 - ")."""
    assert isinstance(error.body, dict)
    return str(error.body["message"])


def sdk(served: Served, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=served.http_url + "/v1", api_key=key, max_retries=0, timeout=30
    )


async def test_a_chat_completion_through_the_openai_sdk() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.chat.completions.create(
            model="echo",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
            ],
            user="alice",
            max_completion_tokens=50,
            temperature=0.5,
        )
    assert answer.object == "chat.completion"
    assert answer.model == "echo"
    assert answer.id.startswith("chatcmpl-")
    assert answer.choices[0].message.content == "hello there"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 2
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 2


async def test_max_tokens_cuts_the_answer_and_says_length() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
        )
    assert answer.choices[0].finish_reason == "length"
    assert (answer.choices[0].message.content or "").split() == ["one", "two"]


async def test_a_streamed_completion_with_usage_last() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        stream = await client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": "streamed words arrive"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed words arrive"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


async def test_without_include_usage_no_usage_chunk() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        stream = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


async def test_caller_tools_and_tool_calls_both_ways() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "call get_weather Paris"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="auto",
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
        assert json.loads(call.function.arguments) == {"input": "Paris"}  # type: ignore[union-attr]

        stream = await client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "call get_weather Oslo"}],
            tools=[WEATHER],  # type: ignore[list-item]
            stream=True,
        )
        arguments, names = "", []
        async for chunk in stream:
            for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                names += [delta.function.name] if delta.function and delta.function.name else []
                arguments += (delta.function.arguments or "") if delta.function else ""
        assert names == ["get_weather"]
        assert json.loads(arguments) == {"input": "Oslo"}

        # The tool's result goes back as a tool message; the model acknowledges it.
        follow = await client.chat.completions.create(
            model="assistant",
            messages=[
                {"role": "user", "content": "call get_weather Paris"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call.model_dump()],  # type: ignore[list-item]
                },
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            ],
            tools=[WEATHER],  # type: ignore[list-item]
        )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content


async def test_response_format_json_schema_is_carried() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        answer = await client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": '{"a": "b"}'}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "thing", "schema": schema, "strict": True},
            },
        )
        # The echo model answers in JSON only when the format reached it.
        assert json.loads(answer.choices[0].message.content or "") == {"reply": '{"a": "b"}'}
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="echo",
                messages=[{"role": "user", "content": "x"}],
                response_format={"type": "xml"},  # type: ignore[typeddict-item]
            )
    assert info.value.status_code == 400
    assert info.value.param == "response_format.type"  # type: ignore[attr-defined]


async def test_a_bad_body_is_400_naming_the_param() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        for kwargs, param in [
            ({"tool_choice": "required"}, "tool_choice"),
            ({"n": 3}, "n"),
            ({"user": 7}, "user"),
            ({"extra_body": {"frequency_bias": 1}}, "frequency_bias"),
        ]:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(
                    model="echo",
                    messages=[{"role": "user", "content": "x"}],
                    **kwargs,  # type: ignore[arg-type]
                )
            assert info.value.param == param, kwargs  # type: ignore[attr-defined]
            assert param in info.value.message
        # The servicer's own validation, in the contract's terms.
        metadata_url = {"url": "http://169.254.169.254/latest/meta-data"}
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="echo",
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": metadata_url}]}
                ],
            )
        assert info.value.code == "invalid_argument"  # type: ignore[attr-defined]
        # In OpenAI's names, not the contract's (messages[0].content[0].image.url).
        assert info.value.param == "messages[0].content[0].image_url.url"  # type: ignore[attr-defined]
        assert message_of(info.value).startswith("messages[0].content[0].image_url.url: ")
        for kwargs, param in [
            ({"top_p": 0.5}, "top_p"),  # not overridable on the assistant agent
            ({"max_tokens": 5}, "max_tokens"),
            ({"max_completion_tokens": 5}, "max_completion_tokens"),
        ]:
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(
                    model="assistant",
                    messages=[{"role": "user", "content": "x"}],
                    **kwargs,  # type: ignore[arg-type]
                )
            assert info.value.param == param  # type: ignore[attr-defined]
            assert message_of(info.value).startswith(f"{param}: "), info.value.message


async def test_an_unknown_agent_is_404_and_the_models_list_is_the_agents() -> None:
    async with serve_config(CONFIG, http=True) as served, sdk(served) as client:
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.code == "agent_not_found"  # type: ignore[attr-defined]
        assert info.value.response.headers["x-request-id"]
        models = [m.id async for m in client.models.list()]
        assert sorted(models) == ["assistant", "echo"]  # this file's CONFIG, not the default
        assert (await client.models.retrieve("echo")).id == "echo"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("nope")


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
    async with serve_config(AUTH.format(keys=keys_file), http=True) as served:
        async with sdk(served, "sb_nope") as client:
            with pytest.raises(openai.AuthenticationError) as unauth:
                await client.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": "x"}]
                )
            assert unauth.value.code == "credentials_invalid"  # type: ignore[attr-defined]
        async with sdk(served, keys[0]) as acme:
            with pytest.raises(openai.PermissionDeniedError):
                await acme.chat.completions.create(
                    model="assistant", messages=[{"role": "user", "content": "x"}]
                )
            assert [m.id async for m in acme.models.list()] == ["echo"]
            # The refused call and the list took 2 of acme's 3 requests a minute.
            await acme.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "x"}]
            )
            with pytest.raises(openai.RateLimitError) as limited:
                await acme.chat.completions.create(
                    model="echo", messages=[{"role": "user", "content": "x"}], stream=True
                )
            headers = limited.value.response.headers
            assert int(headers["retry-after"]) >= 1
            assert int(headers["retry-after-ms"]) >= 1
            assert limited.value.code == "rate_limited"  # type: ignore[attr-defined]
        async with sdk(served, keys[1]) as globex:  # another tenant is untouched
            answer = await globex.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == "hi"
        # The same metrics as the gRPC door: one counter, the tenant from the key.
        exposition = generate_latest(served.app.metrics.registry).decode()
    assert (
        sample(exposition, "switchboard_calls_total", rpc_method="Invoke", tenant="acme", code="OK")
        == 1
    )
    assert (
        sample(
            exposition,
            "switchboard_calls_total",
            rpc_method="Stream",
            tenant="acme",
            code="RESOURCE_EXHAUSTED",
        )
        == 1
    )


FAULTS = """
server:
  http: {port: 0}
  default_deadline_s: 0.5
targets:
  down: {provider: mock, model: echo, mock: {fail_rate: 1.0, error: unavailable, retry_after_s: 2}}
  slow: {provider: mock, model: echo, mock: {hang: true}}
agents:
  down: {route: [down]}
  slow: {route: [slow]}
"""


async def test_upstream_failures_are_503_and_504() -> None:
    async with serve_config(FAULTS, http=True) as served, sdk(served) as client:
        with pytest.raises(openai.InternalServerError) as down:
            await client.chat.completions.create(
                model="down", messages=[{"role": "user", "content": "x"}]
            )
        assert down.value.status_code == 503
        assert down.value.code == "upstream_unavailable"  # type: ignore[attr-defined]
        with pytest.raises(openai.InternalServerError) as slow:
            await client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "x"}]
            )
        assert slow.value.status_code == 504


async def test_an_error_after_the_first_event_ends_the_stream_with_an_error_event() -> None:
    config = """
server:
  http: {port: 0}
targets:
  drop: {provider: mock, model: echo, mock: {drop_after_tokens: 2}}
agents:
  drop: {route: [drop]}
"""
    async with serve_config(config, http=True) as served, sdk(served) as client:
        stream = await client.chat.completions.create(
            model="drop", messages=[{"role": "user", "content": "a b c d e"}], stream=True
        )
        seen: list[str] = []

        async def read() -> None:
            async for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "" if chunk.choices else "")  # noqa: PERF401

        with pytest.raises(openai.APIError) as info:
            await read()
    assert "".join(seen).split() == ["a", "b"]
    assert info.value.code == "unavailable"  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_json_and_sse() -> None:
    async with serve_config(CONFIG, http=True) as served:
        url = served.http_url + "/v1/chat/completions"
        body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi curl"}]})

        def curl(*args: str) -> str:
            done = subprocess.run(
                ["curl", "-sS", "--max-time", "30", *args], capture_output=True, check=True
            )
            return done.stdout.decode()

        plain = await asyncio.to_thread(
            curl, "-H", "content-type: application/json", "-d", body, url
        )
        streamed = await asyncio.to_thread(
            curl,
            "-N",
            "-H",
            "content-type: application/json",
            "-H",
            "x-request-id: curl-1",
            "-d",
            json.dumps({**json.loads(body), "stream": True}),
            url,
        )
        not_json = await asyncio.to_thread(curl, "-w", "%{http_code}", "-d", "{nope", url)
        wrong_method = await asyncio.to_thread(curl, "-i", url)  # a GET
    assert json.loads(plain)["choices"][0]["message"]["content"] == "hi curl"
    events = [line[6:] for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["id"] == "chatcmpl-curl-1"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "hi curl"
    assert not_json.endswith("400")
    assert json.loads(not_json[:-3])["error"]["message"] == "the request body is not valid JSON"
    head, _, refusal = wrong_method.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 405")
    assert "\r\nallow: POST\r\n" in head + "\r\n"
    assert json.loads(refusal)["error"] == {
        "message": "use POST for /v1/chat/completions",
        "type": "invalid_request_error",
        "param": None,
        "code": "method_not_allowed",
    }


async def test_drain_finishes_a_stream_in_flight_over_http() -> None:
    config = """
server:
  http: {port: 0}
targets:
  slow: {provider: mock, model: echo, mock: {tokens_per_s: 20}}
agents:
  slow: {route: [slow]}
"""
    async with serve_config(config, http=True, grace_s=20) as served, sdk(served) as client:
        stream = await client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "w " * 20}], stream=True
        )
        first = await anext(aiter(stream))
        assert first.choices[0].delta.role == "assistant"
        stopping = asyncio.create_task(served.app.stop(20))
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await stopping
    assert text.split() == ["w"] * 20


async def test_a_client_that_leaves_cancels_its_call() -> None:
    """Invoke and Stream alike: the call ends CANCELLED (the upstream answer stops), and the
    server goes on serving."""
    config = """
server:
  http: {port: 0}
targets:
  slow: {provider: mock, model: echo, mock: {tokens_per_s: 5}}
  hang: {provider: mock, model: echo, mock: {hang: true}}
agents:
  slow: {route: [slow]}
  hang: {route: [hang]}
"""
    async with serve_config(config, http=True, grace_s=5) as served:

        def cancelled(method: str) -> float:
            text = generate_latest(served.app.metrics.registry).decode()
            labels = {"door": "openai", "rpc_method": method, "code": "CANCELLED"}
            return sample(text, "switchboard_calls_total", **labels) or 0

        host, port = served.http_url.removeprefix("http://").split(":")
        for agent, stream in (("hang", False), ("slow", True)):
            body = json.dumps(
                {
                    "model": agent,
                    "stream": stream,
                    "messages": [{"role": "user", "content": "w " * 50}],
                }
            ).encode()
            reader, writer = await asyncio.open_connection(host, int(port))
            head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
            if stream:
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
            writer.close()
            await writer.wait_closed()
        await wait_for(lambda: cancelled("Invoke") == 1, what="the Invoke cancelled")
        await wait_for(lambda: cancelled("Stream") == 1, what="the Stream cancelled")
        async with sdk(served) as client:  # and the server goes on
            answer = await client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": "hi"}]
            )
    assert answer.choices[0].message.content == "hi"
