"""An Invoke whose every attempt began answering and then failed is charged for all of them
(issue 12 §2 with issue 11's whole answers): the ledger line carries the attempts' usage, the
budget counts it, and the call's error is what the caller gets."""

from __future__ import annotations

import textwrap
import time

import pytest
from switchboard_client import UnavailableError

from service.usage.budgets import applicable
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as ClaudeScenario
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import serve_config
from tests.test_stalls_and_whole_answers import ENVIRON, config

pytestmark = pytest.mark.asyncio

PRICES = """
pricing:
  gpt-fake: {input_per_mtok: 1000, output_per_mtok: 2000}
  claude-fake: {input_per_mtok: 1000, output_per_mtok: 2000}
budgets:
  - {name: daily, period: day, limit_usd: 100}
"""


async def test_an_invoke_whose_every_attempt_drops_mid_answer_is_charged_for_them() -> None:
    async with (
        OpenAIFake() as gpt,
        AnthropicFake() as claude,
        serve_config(
            textwrap.dedent(config(gpt.base_url, claude.base_url)) + PRICES, ENVIRON
        ) as served,
    ):
        gpt.push(Scenario(text="one two three four five six", pieces=6, disconnect_after=3))
        claude.push(ClaudeScenario(text="a b c d e f", pieces=6, disconnect_after=5))
        with pytest.raises(UnavailableError):
            await served.client.invoke("fallback", "hi")
        assert (len(gpt.received), len(claude.received)) == (1, 1)

        durable = served.app.stores.durable
        (total,) = await durable.totals("default", 0, time.time() + 1, ())
        assert (total.calls, total.failed_calls) == (1, 1)
        # Both prompts went upstream, and what each delivered before it dropped.
        assert total.input_tokens > 0
        assert total.output_tokens > 0
        assert total.cost_nanos > 0
        (bound,) = applicable(served.app.snapshot.budgets, "default", "", time.time())
        assert await served.app.stores.fast.spent(bound.line) == (total.cost_nanos, 0)
