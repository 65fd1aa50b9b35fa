"""A stream is whole when the protocol says so, not when the optional usage came (issue 11 §2).

Chat Completions: a chunk with a ``finish_reason``, then ``data: [DONE]``; Anthropic:
``message_stop``. Through the real SDKs against the fake upstreams: a server that ignores
``stream_options.include_usage`` answers successfully with an estimated usage that is priced,
recorded and charged to budgets; a body that ends without ``[DONE]`` stays UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from google.protobuf import timestamp_pb2
from switchboard.v1 import usage_pb2 as upb
from switchboard_client import ResourceExhaustedError, UnavailableError

from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as AnthropicScenario
from tests.fakes.openai_fake import FakeToolCall, OpenAIFake, Scenario
from tests.harness import Served, serve_config
from tests.provider_rigs import ANTHROPIC_KEY, collect, kinds
from tests.state.stateful import usage

pytestmark = pytest.mark.asyncio

# Dear prices, so that a budget binds within a few calls: 0.001 USD per input token and 0.002
# per output token.
IN, OUT = 0.001, 0.002
NO_USAGE = Scenario(omit_usage=True)


def _config(openai_url: str, anthropic_url: str, budget_usd: float) -> str:
    return f"""
    targets:
      local:
        provider: openai_compatible
        model: llama-fake
        base_url: {openai_url}/v1
        first_token_timeout_s: 30  # so that Invoke streams too (no non-streamed request)
      claude:
        provider: anthropic
        model: claude-compatible-fake
        base_url: {anthropic_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
    pricing:
      llama-fake: {{input_per_mtok: 1000, output_per_mtok: 2000}}
      claude-compatible-fake: {{input_per_mtok: 1000, output_per_mtok: 2000}}
    resilience:
      breaker: {{fail_max: 3, reset_timeout_s: 600}}
    budgets:
      - {{name: tenant-daily, tenant: "*", period: day, limit_usd: {budget_usd}}}
    agents:
      local:
        route: [local]
        parameters: {{max_tokens: 10}}
      claude:
        route: [claude]
        parameters: {{max_tokens: 10}}
    """


@contextlib.asynccontextmanager
async def _served(
    default: Scenario, budget_usd: float = 1000.0
) -> AsyncIterator[tuple[OpenAIFake, AnthropicFake, Served]]:
    async with (
        OpenAIFake(default) as openai_fake,
        AnthropicFake() as anthropic_fake,
        serve_config(
            _config(openai_fake.base_url, anthropic_fake.base_url, budget_usd),
            {"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
        ) as served,
    ):
        yield openai_fake, anthropic_fake, served


async def test_server_ignoring_include_usage_answers_with_an_estimate() -> None:
    # Ollama, llama.cpp and others: role chunk, content, finish_reason stop, [DONE], no usage.
    async with _served(NO_USAGE) as (fake, _, served):
        # More calls than the breaker's fail_max: none fails, so the circuit never opens.
        answers = [await served.client.invoke("local", "hi") for _ in range(5)]

        assert fake.received[-1].body["stream_options"] == {"include_usage": True}
        for answer in answers:
            assert answer.message.content[0].text == "Hello from the fake OpenAI."
            assert answer.usage.estimated
            # "hi" is one message (5 tokens); the 27-byte answer 9 tokens (3 bytes a token).
            assert (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 9)
            assert answer.usage.cost_usd == pytest.approx(5 * IN + 9 * OUT)
        assert len(fake.received) == 5


async def test_streamed_answer_without_usage_chunk_ends_with_estimated_usage() -> None:
    calls = (FakeToolCall("lookup", '{"q": "weather in Paris"}', id="call_1"),)
    async with _served(Scenario(text="", tool_calls=calls, omit_usage=True)) as (_, _, served):
        events, error = await collect(served.client, "local", "hi")

    assert error is None
    assert kinds(events)[-2:] == ["usage", "finish"]
    estimate = events[-2].usage
    assert estimate.estimated
    # The tool call's name and arguments (31 bytes: 11 tokens) plus its framing (4).
    assert estimate.output_tokens == 15
    assert estimate.cost_usd > 0


async def test_reported_usage_is_not_marked_estimated() -> None:
    async with _served(Scenario(usage=(12, 6))) as (_, _, served):
        answer = await served.client.invoke("local", "hi")

    assert not answer.usage.estimated
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (12, 6)


async def test_estimated_usage_is_recorded_and_charged_to_budgets() -> None:
    # Each call costs 5 * IN + 9 * OUT = 0.023 USD and reserves its upper bound, 0.038 up
    # front ((8 + 8 + 2 bytes) in, 10 out): the third finds no room in 0.07.
    async with _served(NO_USAGE, budget_usd=0.07) as (_, _, served):
        before = time.time() - 1
        first = await served.client.invoke("local", "hi")
        second = await served.client.invoke("local", "hi")
        with pytest.raises(ResourceExhaustedError, match="tenant-daily"):
            await served.client.invoke("local", "hi")

        totals = await usage(served).GetUsage(upb.GetUsageRequest(start_time=_ts(before)))
    (group,) = totals.groups
    assert group.cost_usd == pytest.approx(first.usage.cost_usd + second.usage.cost_usd)
    assert group.output_tokens == 18


@pytest.mark.parametrize(
    "scenario",
    [
        # Finish reason and usage came, then the body ended: no [DONE], so it was cut short.
        pytest.param(Scenario(omit_done=True), id="usage-then-eof"),
        pytest.param(Scenario(omit_done=True, omit_usage=True), id="finish-then-eof"),
    ],
)
async def test_body_that_ends_without_done_is_truncated(scenario: Scenario) -> None:
    async with _served(scenario) as (_, _, served):
        events, error = await collect(served.client, "local", "hi")
        assert isinstance(error, UnavailableError)
        assert "(no [DONE])" in error.message
        assert "finish" not in kinds(events)
        with pytest.raises(UnavailableError, match="no \\[DONE\\]"):
            await served.client.invoke("local", "hi")


async def test_anthropic_compatible_server_without_usage_answers_with_an_estimate() -> None:
    async with _served(Scenario()) as (_, anthropic_fake, served):
        anthropic_fake.push(AnthropicScenario(omit_usage=True))
        answer = await served.client.invoke("claude", "hi")

    assert answer.message.content[0].text == "Hello from the fake Claude."
    assert answer.usage.estimated
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 9)
    assert answer.usage.cost_usd == pytest.approx(5 * IN + 9 * OUT)


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out
