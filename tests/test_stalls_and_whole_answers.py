"""Issue 11 §7, through the real SDKs against the fake upstreams.

- Invoke takes whole answers: a drop or an error after the first tokens is retried or sent to
  the fallback (the caller has seen nothing yet), and the abandoned attempt's usage is
  charged with the answer. Stream keeps committing at its first event
  (tests/test_resilience_sdk.py pins that).
- First-token and idle timeouts, per target and per route, distinct from the attempt's total:
  a stalled first token is retried or falls back, a stream that falls silent mid-answer is cut,
  a long healthy answer is not; each has its own upstream-call outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import usage_pb2 as upb
from switchboard_client import UnavailableError

from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as ClaudeScenario
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import Served, serve_config
from tests.state.stateful import usage

ENVIRON = {"OPENAI_API_KEY": "sk-test-openai-key-123", "ANTHROPIC_API_KEY": "sk-ant-test-456"}
STALL_S = 60.0  # far longer than any timeout here: a stall is only ever cut short
FIRST_TOKEN_S = 2.0
IDLE_S = 1.0
CLAUDE_TEXT = "Claude answers whole."


def config(gpt_url: str, claude_url: str) -> str:
    return f"""
    targets:
      gpt:
        provider: openai
        model: gpt-fake
        base_url: {gpt_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
        first_token_timeout_s: {FIRST_TOKEN_S}
      claude:
        provider: anthropic
        model: claude-fake
        base_url: {claude_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
    agents:
      fallback:
        route: [gpt, claude]
      claude_first:
        route: [claude, gpt]
      retrying:
        route: {{targets: [gpt], retry: {{max_attempts: 2}}}}
      claude_retrying:
        route: {{targets: [claude], retry: {{max_attempts: 2}}}}
      idle:
        route: {{targets: [gpt, claude], idle_timeout_s: {IDLE_S}}}
    resilience:
      breaker: {{fail_max: 5, reset_timeout_s: 60}}
    """


@contextlib.asynccontextmanager
async def upstreams() -> AsyncIterator[tuple[OpenAIFake, AnthropicFake, Served]]:
    async with (
        OpenAIFake() as gpt,
        AnthropicFake(ClaudeScenario(text=CLAUDE_TEXT)) as claude,
        serve_config(config(gpt.base_url, claude.base_url), ENVIRON) as served,
    ):
        yield gpt, claude, served


def outcomes(served: Served, target: str, outcome: str) -> float:
    value: float = served.app.metrics.upstream_calls.labels(target, outcome)._value.get()
    return value


async def read(served: Served, agent: str, received: list[pb.StreamResponse]) -> None:
    """Stream ``agent``'s answer into ``received`` (what came before an error is kept)."""
    async for event in served.client.stream(agent, "hi"):
        received.append(event)  # noqa: PERF401 (keeps what came before the error)


# Invoke: whole answers ----------------------------------------------------------------------


async def test_invoke_falls_back_after_a_drop_mid_answer_and_charges_the_lost_attempt() -> None:
    async with upstreams() as (gpt, claude, s):
        gpt.push(Scenario(text="one two three four five six", pieces=6, disconnect_after=3))
        answer = await s.client.invoke("fallback", "hi")
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        assert answer.message.content[0].text == CLAUDE_TEXT  # nothing of gpt's mixed in
        # Claude reported its own usage; gpt's two delivered pieces and the prompt it was
        # sent are added as an estimate, so the lost attempt is charged too.
        claude_in, claude_out = ClaudeScenario().usage
        assert answer.usage.input_tokens > claude_in
        assert answer.usage.output_tokens > claude_out
        assert answer.usage.estimated
        assert len(gpt.received) == 1
        assert len(claude.received) == 1
        # The ledger line charges the same sum.
        ledger = await usage(s).GetUsage(upb.GetUsageRequest())
        (line,) = ledger.groups
        assert (line.calls, line.output_tokens) == (1, answer.usage.output_tokens)
        assert line.input_tokens == answer.usage.input_tokens


async def test_invoke_retries_an_error_mid_answer_on_the_same_target() -> None:
    async with upstreams() as (gpt, claude, s):
        claude.push(ClaudeScenario(text="lost answer here", pieces=3, error_after=4))
        answer = await s.client.invoke("claude_retrying", "hi")
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        assert answer.message.content[0].text == CLAUDE_TEXT
        assert len(claude.received) == 2
        assert gpt.received == []


async def test_invoke_reroutes_an_anthropic_drop_mid_answer_to_openai() -> None:
    async with upstreams() as (_, claude, s):
        claude.push(ClaudeScenario(text="a b c d e f", pieces=6, disconnect_after=5))
        answer = await s.client.invoke("claude_first", "hi")
        assert (answer.target.name, answer.attempts) == ("gpt", 2)
        assert answer.message.content[0].text == Scenario().text


async def test_a_stream_still_fails_after_its_first_event() -> None:
    async with upstreams() as (gpt, claude, s):
        gpt.push(Scenario(text="one two three four five six", pieces=6, disconnect_after=3))
        received: list[pb.StreamResponse] = []
        with pytest.raises(UnavailableError):
            await read(s, "fallback", received)
        assert received[0].start.target.name == "gpt"
        assert claude.received == []


# First-token and idle timeouts --------------------------------------------------------------


async def test_a_stalled_first_token_falls_back_within_the_first_token_timeout() -> None:
    async with upstreams() as (gpt, _, s):
        gpt.push(Scenario(first_chunk_delay_s=STALL_S))
        began = time.monotonic()
        answer = await s.client.invoke("fallback", "hi")
        took = time.monotonic() - began
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        assert FIRST_TOKEN_S <= took < STALL_S / 2
        assert outcomes(s, "gpt", "first_token_timeout") == 1
        assert s.app.targets.get("gpt").breaker.fail_counter == 1  # the target's fault
        await gpt.wait_for(lambda: gpt.abandoned == 1)  # its request was closed


async def test_a_stalled_first_token_is_retried_on_the_same_target() -> None:
    async with upstreams() as (gpt, _, s):
        gpt.push(Scenario(latency_s=STALL_S))  # not even the status line
        answer = await s.client.invoke("retrying", "hi")
        assert (answer.target.name, answer.attempts) == ("gpt", 2)
        assert outcomes(s, "gpt", "first_token_timeout") == 1


async def test_a_stream_that_falls_silent_mid_answer_is_cut_by_the_idle_timeout() -> None:
    async with upstreams() as (gpt, claude, s):
        gpt.push(Scenario(text="one two three four", pieces=4, stall_after=3, stall_s=STALL_S))
        received: list[pb.StreamResponse] = []
        began = time.monotonic()
        with pytest.raises(UnavailableError, match="idle_timeout_s of 1s"):
            await read(s, "idle", received)
        assert time.monotonic() - began < STALL_S / 2
        texts = [e.text_delta.text for e in received if e.WhichOneof("event") == "text_delta"]
        delivered = "".join(texts)  # what came before the silence, once
        assert delivered
        assert "one two three four".startswith(delivered)
        assert delivered != "one two three four"
        assert outcomes(s, "gpt", "idle_timeout") == 1
        assert claude.received == []  # committed: no fallback for a stream

        # The same stall under Invoke: the caller has seen nothing, so the fallback answers.
        gpt.push(Scenario(text="one two three four", pieces=4, stall_after=3, stall_s=STALL_S))
        answer = await s.client.invoke("idle", "hi")
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        assert outcomes(s, "gpt", "idle_timeout") == 2


async def test_a_long_healthy_answer_is_not_cut_by_the_idle_timeout() -> None:
    async with upstreams() as (gpt, claude, s):
        text = " ".join(f"w{i}" for i in range(12))
        # Each piece well inside the idle timeout, the whole answer well past it.
        gpt.push(Scenario(text=text, pieces=12, chunk_delay_s=IDLE_S / 8))
        began = time.monotonic()
        answer = await s.client.invoke("idle", "hi")
        assert time.monotonic() - began > IDLE_S
        assert (answer.target.name, answer.attempts) == ("gpt", 1)
        assert answer.message.content[0].text == text
        assert claude.received == []


async def test_a_caller_that_leaves_is_not_counted_as_a_timeout() -> None:
    async with upstreams() as (gpt, _, s):
        gpt.push(Scenario(first_chunk_delay_s=STALL_S))
        call = asyncio.ensure_future(s.client.invoke("fallback", "hi"))
        await gpt.wait_for(lambda: len(gpt.received) == 1)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await gpt.wait_for(lambda: gpt.abandoned == 1)
        assert outcomes(s, "gpt", "first_token_timeout") == 0
        assert s.app.targets.get("gpt").breaker.fail_counter == 0
