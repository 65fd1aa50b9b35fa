"""Every upstream attempt that began answering is charged, at its own target's price (issue 12
§2 with issue 11's whole answers):

- an Invoke whose attempts drop mid-answer and fall back: each lost attempt is priced at the
  target it ran on, not at the price of the target that answered (or failed) last;
- a call cancelled by its caller mid-answer is charged the prompt (as the upstream reported
  it, when it did: Anthropic's message_start) and what the upstream delivered until then:
  Invoke and Stream, on both providers, through both doors (gRPC and the OpenAI-compatible
  HTTP door); a whole-answer Invoke was charged nothing before.

The ledger line, the caller's usage and the budget agree to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from switchboard_client import ResourceExhaustedError, UnavailableError

from service.usage.budgets import applicable
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as ClaudeScenario
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import Served, serve_config
from tests.test_stalls_and_whole_answers import ENVIRON, config
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio

# Nano-dollars a token: the two targets have different prices, so a cost summed at the wrong
# target's price is visible.
GPT_IN, GPT_OUT = 1_000_000, 2_000_000
CLAUDE_IN, CLAUDE_OUT = 3_000_000, 6_000_000
PRICES = """
pricing:
  gpt-fake: {input_per_mtok: 1000, output_per_mtok: 2000}
  claude-fake: {input_per_mtok: 3000, output_per_mtok: 6000}
budgets:
  - {name: daily, period: day, limit_usd: 100}
"""
STALL_S = 60.0  # a stall that only the caller's cancellation ends
NINE = ("abcdefghi", "jklmnopqr", "stuvwxyz!")  # 9 bytes a piece: 3 estimated tokens each


@contextlib.asynccontextmanager
async def _served(*, http: bool = False) -> AsyncIterator[tuple[OpenAIFake, AnthropicFake, Served]]:
    async with (
        OpenAIFake() as gpt,
        AnthropicFake() as claude,
        serve_config(
            textwrap.dedent(config(gpt.base_url, claude.base_url)) + PRICES, ENVIRON, http=http
        ) as served,
    ):
        yield gpt, claude, served


async def _line(served: Served) -> tuple[int, int, int, int]:
    """(failed calls, input tokens, output tokens, cost) of the one ledger line, once the
    call's budget settlement is done; the budget must count exactly the line's cost."""
    durable = served.app.stores.durable
    give_up = time.monotonic() + 15
    while not (totals := await durable.totals("default", 0, time.time() + 1, ())):
        assert time.monotonic() < give_up, "no ledger line"
        await asyncio.sleep(0.02)
    (total,) = totals
    assert total.calls == 1
    await wait_for(lambda: served.app.pipeline.recorder.in_flight == 0)
    (bound,) = applicable(served.app.snapshot.budgets, "default", "", time.time())
    assert await served.app.stores.fast.spent(bound.line) == (total.cost_nanos, 0)
    return total.failed_calls, total.input_tokens, total.output_tokens, total.cost_nanos


async def test_a_lost_attempt_is_priced_at_its_own_target() -> None:
    async with _served() as (gpt, _, served):
        gpt.push(Scenario(text="one two three four five six", pieces=6, disconnect_after=3))
        answer = await served.client.invoke("fallback", "hi")
        assert (answer.target.name, answer.attempts) == ("claude", 2)
        claude_in, claude_out = ClaudeScenario().usage
        failed, input_tokens, output_tokens, cost = await _line(served)
        assert failed == 0
        # gpt's share is the rest of the line: its prompt and the pieces it delivered.
        gpt_in, gpt_out = input_tokens - claude_in, output_tokens - claude_out
        assert gpt_in > 0
        assert gpt_out > 0
        expected = gpt_in * GPT_IN + gpt_out * GPT_OUT + claude_in * CLAUDE_IN
        expected += claude_out * CLAUDE_OUT
        assert cost == expected
        assert round(answer.usage.cost_usd * 1e9) == expected  # what the caller is told
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (
            input_tokens,
            output_tokens,
        )


async def test_an_invoke_whose_every_attempt_drops_mid_answer_is_charged_for_them() -> None:
    async with _served() as (gpt, claude, served):
        gpt.push(Scenario(text="one two three four five six", pieces=6, disconnect_after=3))
        claude.push(ClaudeScenario(text="a b c d e f", pieces=6, disconnect_after=5))
        with pytest.raises(UnavailableError):
            await served.client.invoke("fallback", "hi")
        assert (len(gpt.received), len(claude.received)) == (1, 1)
        failed, input_tokens, output_tokens, cost = await _line(served)
        assert failed == 1
        # gpt's prompt is estimated, claude's as its message_start reported it; each
        # delivered some output (estimated): some split of it prices to the line's cost.
        claude_in = ClaudeScenario().usage[0]
        gpt_in = input_tokens - claude_in
        assert gpt_in > 0
        assert output_tokens >= 2
        outputs = [
            (gpt_out, output_tokens - gpt_out)
            for gpt_out in range(1, output_tokens)
            if gpt_in * GPT_IN
            + claude_in * CLAUDE_IN
            + gpt_out * GPT_OUT
            + (output_tokens - gpt_out) * CLAUDE_OUT
            == cost
        ]
        assert outputs, "the cost is not each attempt at its own price"


async def _cancel_when_begun(served: Served, target: str, call: asyncio.Future[object]) -> None:
    """Cancel ``call`` once ``target``'s first piece reached Switchboard (the router notes the
    time to the first event of every attempt), while the upstream stalls after it."""
    await wait_for(lambda: len(served.app.targets.get(target).latency) == 1)
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await call


async def _begin(served: Served, door: str, rpc: str, agent: str) -> asyncio.Future[object]:
    """Start the call; a stream is read until its first text, then left open."""
    if door == "grpc" and rpc == "invoke":
        return asyncio.ensure_future(served.client.invoke(agent, "hi"))
    if door == "grpc":
        events = aiter(served.client.stream(agent, "hi"))
        while (await anext(events)).WhichOneof("event") != "text_delta":
            pass
        return asyncio.ensure_future(anext(events))
    sdk = AsyncOpenAI(base_url=f"{served.http_url}/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]

    async def call() -> object:
        try:
            if rpc == "invoke":
                return await sdk.chat.completions.create(model=agent, messages=messages)
            stream = await sdk.chat.completions.create(model=agent, messages=messages, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    await asyncio.Event().wait()  # read the first text, then stay
            return None
        finally:
            await sdk.close()

    return asyncio.ensure_future(call())


@pytest.mark.parametrize("rpc", ["invoke", "stream"])
@pytest.mark.parametrize("door", ["grpc", "http"])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_call_cancelled_mid_answer_is_charged_what_was_delivered(
    provider: str, door: str, rpc: str
) -> None:
    """Invoke and Stream, through gRPC and the OpenAI-compatible door, on both providers."""
    async with _served(http=door == "http") as (gpt, claude, served):
        # The upstream sends its first piece of text, then stalls until the caller leaves.
        fake: OpenAIFake | AnthropicFake
        if provider == "openai":
            target, agent, fake = "gpt", "fallback", gpt
            gpt.push(Scenario(chunks=NINE, stall_after=2, stall_s=STALL_S))  # role, piece
            price_in, price_out = GPT_IN, GPT_OUT
        else:
            target, agent, fake = "claude", "claude_first", claude
            # message_start, content_block_start, ping, the first text delta
            claude.push(
                ClaudeScenario(chunks=NINE, usage=(777, 10), stall_after=4, stall_s=STALL_S)
            )
            price_in, price_out = CLAUDE_IN, CLAUDE_OUT
        call = await _begin(served, door, rpc, agent)
        await _cancel_when_begun(served, target, call)
        await fake.wait_for(lambda: fake.abandoned == 1)  # the upstream request was closed
        failed, input_tokens, output_tokens, cost = await _line(served)
        assert failed == 1
        if provider == "anthropic":
            assert input_tokens == 777  # as message_start reported it, not an estimate
        assert input_tokens > 0  # the prompt it was sent
        assert output_tokens == 3  # the one piece delivered (9 bytes; estimated)
        assert cost == input_tokens * price_in + output_tokens * price_out
        entries = await served.app.stores.durable.recent_audit("default", 1)
        assert entries[0].outcome == "Cancelled"


TIGHT = """
targets:
  gpt:
    provider: openai
    model: gpt-fake
    base_url: {gpt}/v1
    api_key: {{env: OPENAI_API_KEY}}
    first_token_timeout_s: 60  # streamed for Invoke too (the fake never stalls)
  claude:
    provider: anthropic
    model: claude-fake
    base_url: {claude}
    api_key: {{env: ANTHROPIC_API_KEY}}
pricing:  # output dominates: an attempt costs about what it reserves
  gpt-fake: {{input_per_mtok: 10, output_per_mtok: 100000}}
  claude-fake: {{input_per_mtok: 10, output_per_mtok: 100000}}
agents:
  tight:
    route: [gpt, claude]
    parameters: {{max_tokens: 10}}
budgets:
  - {{name: daily, period: day, limit_usd: 3.1}}
resilience:
  breaker: {{fail_max: 100, reset_timeout_s: 60}}
"""


async def test_a_fallback_reserves_its_own_bound_so_a_burst_cannot_overspend() -> None:
    """Each call reserves ~1 USD, three fit in 3.1 USD; each first attempt drops after its
    ten tokens (1 USD spent), and the fallback would spend 1 USD more. It must reserve that
    first: there is no room, so the calls end with the drop, and the budget holds. The first
    attempts answer once all three have arrived (under load a call admitted after another
    had settled would find room for its fallback, rightly)."""
    ten = tuple("abc" for _ in range(10))
    async with (
        OpenAIFake(Scenario(chunks=ten, disconnect_after=11, after_requests=3)) as gpt,
        AnthropicFake(ClaudeScenario(chunks=ten, usage=(5, 10))) as claude,
        serve_config(
            textwrap.dedent(TIGHT.format(gpt=gpt.base_url, claude=claude.base_url)), ENVIRON
        ) as served,
    ):

        async def call() -> str:
            try:
                await served.client.invoke("tight", "hi")
            except ResourceExhaustedError:
                return "refused"
            except UnavailableError:
                return "dropped"
            return "answered"

        outcomes = sorted(await asyncio.gather(*(call() for _ in range(6))))
        assert outcomes == ["dropped"] * 3 + ["refused"] * 3
        assert claude.received == []
        durable = served.app.stores.durable
        (total,) = await durable.totals("default", 0, time.time() + 1, ())
        assert total.cost_nanos <= 3.1e9
        assert total.output_tokens == 30  # the three lost attempts, charged
