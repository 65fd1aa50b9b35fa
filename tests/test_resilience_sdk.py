"""Resilience scenarios against fake OpenAI and Anthropic HTTP servers, through the real
SDK providers: retries honour the upstream's retry-after, timeouts and hedge losers close
their HTTP requests, a dropped stream is never replayed, a breaker keeps calls off a dead
upstream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import UnavailableError

from service.routing.breaker import OPEN
from tests.chaos import no_tasks_left
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as ClaudeScenario
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import Served, serve_config

pytestmark = pytest.mark.asyncio

ENVIRON = {"OPENAI_API_KEY": "sk-test-openai-key-123", "ANTHROPIC_API_KEY": "sk-ant-test-456"}


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
      retrying:
        route: {{targets: [gpt], retry: {{max_attempts: 3, max_retry_after_s: 1}}}}
      fallback:
        route: [gpt, claude]
      guarded:
        route: {{targets: [{{target: gpt, attempt_timeout_s: 0.5}}, claude]}}
      hedged:
        route: {{targets: [gpt, claude], hedge: {{delay_s: 0.1, to: next}}}}
    resilience:
      breaker: {{fail_max: 2, reset_timeout_s: 60}}
    """


@contextlib.asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[OpenAIFake, AnthropicFake, Served]]:
    async with (
        OpenAIFake() as gpt,
        AnthropicFake() as claude,
        serve_config(config(gpt.base_url, claude.base_url), ENVIRON) as served,
    ):
        yield gpt, claude, served


async def test_a_429_with_retry_after_is_retried_on_the_same_upstream() -> None:
    async with upstreams() as (gpt, claude, s):
        gpt.push(Scenario(status=429, headers={"retry-after-ms": "50"}))
        answer = await s.client.invoke("retrying", "hi")
        assert (answer.target.name, answer.attempts) == ("gpt", 2)
        assert answer.message.content[0].text == "Hello from the fake OpenAI."
        assert len(gpt.received) == 2
        assert len(claude.received) == 0


async def test_a_hung_upstream_is_cut_off_its_request_closed_and_the_fallback_answers() -> None:
    async with upstreams() as (gpt, _, s):
        before = asyncio.all_tasks()
        gpt.push(Scenario(hang=True))
        answer = await s.client.invoke("guarded", "hi", timeout=20)
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        await gpt.wait_for(lambda: gpt.abandoned == 1)
        await no_tasks_left(before)


async def test_hedging_takes_the_fast_upstream_and_closes_the_slow_request() -> None:
    async with upstreams() as (gpt, _, s):
        before = asyncio.all_tasks()
        gpt.push(Scenario(first_chunk_delay_s=10))
        answer = await s.client.invoke("hedged", "hi", timeout=20)
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        assert answer.message.content[0].text == "Hello from the fake Claude."
        await gpt.wait_for(lambda: gpt.abandoned == 1)
        assert s.app.targets.get("gpt").breaker.fail_counter == 0  # a loser is no failure
        await no_tasks_left(before)


async def test_a_dropped_stream_falls_back_before_its_first_token_only() -> None:
    async with upstreams() as (gpt, claude, s):
        gpt.push(Scenario(disconnect_after=0))
        events = [e async for e in s.client.stream("fallback", "hi")]
        assert events[0].start.target.name == "claude"
        assert events[-1].finish.attempts == 2

        gpt.push(Scenario(text="one two three four five six", pieces=6, disconnect_after=3))
        received: list[pb.StreamResponse] = []

        async def read() -> None:
            async for event in s.client.stream("fallback", "hi"):
                received.append(event)  # noqa: PERF401 (keeps what came before the error)

        with pytest.raises(UnavailableError):
            await read()
        texts = [e.text_delta.text for e in received if e.WhichOneof("event") == "text_delta"]
        assert texts  # some deltas got through before the drop…
        assert "one two three four five six".startswith("".join(texts))  # …each exactly once
        assert received[0].start.target.name == "gpt"
        assert len(claude.received) == 1  # only the first call's fallback


async def test_the_breaker_keeps_calls_off_a_failing_upstream() -> None:
    async with upstreams() as (gpt, claude, s):
        gpt.push(Scenario(status=503), Scenario(status=503))
        for _ in range(2):
            answer = await s.client.invoke("fallback", "hi")
            assert answer.target.name == "claude"
        assert s.app.targets.breaker_states()["gpt"] == OPEN
        claude.push(ClaudeScenario(text="still here"))
        answer = await s.client.invoke("fallback", "hi")
        assert (answer.target.name, answer.attempts) == ("claude", 1)
        assert answer.message.content[0].text == "still here"
        assert len(gpt.received) == 2


async def test_answers_read_to_the_end_keep_one_pooled_connection() -> None:
    async with upstreams() as (gpt, _, s):
        for _ in range(3):
            events = [e async for e in s.client.stream("fallback", "hi")]
            assert events[-1].finish.target.name == "gpt"
        await gpt.wait_for(lambda: gpt.completed == 3)
        assert gpt.connections == 1  # no connection cut and reopened per answer
        assert gpt.abandoned == 0
