"""OpenAI and Anthropic targets on one route: the same answer shape whichever one answers."""

from __future__ import annotations

import json

import pytest
from switchboard.v1 import agent_pb2 as pb

from tests.fakes import anthropic_fake, openai_fake
from tests.harness import serve_config

pytestmark = pytest.mark.asyncio

ENVIRON = {"OPENAI_API_KEY": "sk-test-openai-key-123", "ANTHROPIC_API_KEY": "sk-ant-test-key-456"}


def config(openai_url: str, anthropic_url: str) -> str:
    return f"""
    targets:
      gpt:
        provider: openai
        model: gpt-fake
        base_url: {openai_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
      claude:
        provider: anthropic
        model: claude-fake
        base_url: {anthropic_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
    agents:
      both:
        system_prompt: Use the tool.
        route: [gpt, claude]
        tools:
          - name: get_weather
            parameters: {{type: object, properties: {{city: {{type: string}}}}}}
    """


async def test_retryable_upstream_failure_falls_back_to_the_other_provider() -> None:
    async with (
        openai_fake.OpenAIFake() as gpt,
        anthropic_fake.AnthropicFake() as claude,
        serve_config(config(gpt.base_url, claude.base_url), ENVIRON) as served,
    ):
        gpt.push(openai_fake.Scenario(status=503))
        response = await served.client.invoke("both", "hi")

    assert response.target.name == "claude"
    assert response.attempts == 2
    assert response.message.content[0].text == "Hello from the fake Claude."
    assert len(gpt.received) == 1
    assert len(claude.received) == 1


async def test_tool_calls_have_the_same_shape_from_either_provider() -> None:
    async with (
        openai_fake.OpenAIFake() as gpt,
        anthropic_fake.AnthropicFake() as claude,
        serve_config(config(gpt.base_url, claude.base_url), ENVIRON) as served,
    ):
        arguments = '{"city": "Paris"}'
        gpt.push(
            openai_fake.Scenario(
                text="", tool_calls=(openai_fake.FakeToolCall("get_weather", arguments, "c1"),)
            )
        )
        from_openai = await served.client.invoke("both", "weather?")
        gpt.push(openai_fake.Scenario(status=500))
        claude.push(
            anthropic_fake.Scenario(
                text="", tool_uses=(anthropic_fake.FakeToolUse("get_weather", arguments, "c1"),)
            )
        )
        from_anthropic = await served.client.invoke("both", "weather?")

    assert (from_openai.target.name, from_anthropic.target.name) == ("gpt", "claude")
    for response in (from_openai, from_anthropic):
        assert response.finish_reason == pb.FINISH_REASON_TOOL_CALLS
        assert not response.message.content
        (call,) = response.message.tool_calls
        assert (call.id, call.name, json.loads(call.arguments_json)) == (
            "c1",
            "get_weather",
            {"city": "Paris"},
        )
    assert gpt.received[0].body["tools"][0]["function"]["name"] == "get_weather"
    assert claude.received[0].body["tools"][0]["name"] == "get_weather"
