"""Every token the provider bills is carried and priced (issue 11 §3).

Prices come from genai-prices' bundled data, with ``pricing:`` overrides for each dimension.
The end-to-end tests run the real SDKs against the fake upstreams and read the cost Switchboard
returns; the unit tests check the arithmetic against genai-prices' own calculator.
"""

from __future__ import annotations

import contextlib
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import data as bundled
from genai_prices.data_snapshot import DataSnapshot
from google.protobuf import timestamp_pb2
from switchboard.v1 import usage_pb2 as upb

from service.config.load import ConfigError, load
from service.config.state_model import PriceConfig
from service.domain import TargetRef, Usage
from service.providers.base import TargetSpec
from service.usage.price_data import GENAI_PRICES_VERSION, PriceData
from service.usage.pricing import Price, Rate, price_table
from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as AnthropicScenario
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import serve_config
from tests.provider_rigs import ANTHROPIC_KEY, OPENAI_KEY
from tests.state.stateful import usage

SONNET_37 = TargetSpec("claude", "anthropic", "claude-3-7-sonnet-20250219")
DATA = PriceData()


def _cost(target: TargetSpec, usage: Usage, **overrides: PriceConfig) -> int:
    return price_table(overrides, {target.name: target}, DATA).cost_nanos(target.ref, usage)


# --- the issue's input ---------------------------------------------------------------------


def test_issue_example_cache_writes_cost_more_than_input() -> None:
    # 3 input, 12304 written to the 5-minute cache, 550 output: the invoice says $0.054399
    # (writes cost 1.25x input); pricing writes as plain input gave $0.045171.
    usage = Usage(input_tokens=3 + 12304, output_tokens=550, cache_creation_5m_input_tokens=12304)
    assert _cost(SONNET_37, usage) == 54_399_000


def test_one_hour_cache_writes_cost_twice_the_input_rate() -> None:
    usage = Usage(input_tokens=3 + 12304, output_tokens=550, cache_creation_1h_input_tokens=12304)
    assert _cost(SONNET_37, usage) == (3 * 3 + 12304 * 6 + 550 * 15) * 1000


def test_cache_reads_and_reasoning_are_priced_by_their_rates() -> None:
    gpt = TargetSpec("gpt", "openai", "o3-mini")
    usage = Usage(
        input_tokens=1000, cached_input_tokens=800, output_tokens=500, reasoning_tokens=400
    )
    price = DATA.price("openai", "o3-mini")
    assert price is not None
    assert price.cached_input is not None
    expected = (
        200 * price.input.base + 800 * price.cached_input.base + 500 * price.output.base
    ) * 1000
    assert _cost(gpt, usage) == int(expected)


# --- agreement with genai-prices' own calculator -------------------------------------------


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "claude-3-7-sonnet-20250219"),
        ("anthropic", "claude-sonnet-4-5"),  # long-context tiers past 200k input tokens
        ("anthropic", "claude-3-5-haiku-latest"),
        ("openai", "gpt-4o-2024-08-06"),
        ("openai", "gpt-4.1-mini"),
        ("openai", "o3-mini"),
    ],
)
@pytest.mark.parametrize(
    ("read", "write_5m", "write_1h", "uncached", "output", "reasoning"),
    [
        (0, 0, 0, 1200, 300, 0),
        (5000, 12304, 0, 3, 550, 0),
        (1000, 2000, 3000, 500, 800, 200),
        (150_000, 20_000, 20_000, 30_000, 4000, 1000),  # 220k input: the long-context tier
    ],
)
def test_cost_agrees_with_genai_prices(
    provider: str,
    model: str,
    read: int,
    write_5m: int,
    write_1h: int,
    uncached: int,
    output: int,
    reasoning: int,
) -> None:
    total_in = read + write_5m + write_1h + uncached
    ours = Usage(
        input_tokens=total_in,
        output_tokens=output,
        cached_input_tokens=read,
        cache_creation_5m_input_tokens=write_5m,
        cache_creation_1h_input_tokens=write_1h,
        reasoning_tokens=reasoning,
    )
    theirs = GenaiUsage(
        input_tokens=total_in,
        cache_read_tokens=read,
        cache_write_tokens=write_5m + write_1h,
        cache_write_1h_tokens=write_1h,
        output_tokens=output,
        output_reasoning_tokens=reasoning,
    )
    snapshot = DataSnapshot(providers=bundled.providers, from_auto_update=False)
    expected = snapshot.calc(theirs, model, provider, None, None).total_price
    target = TargetSpec("t", provider, model)
    assert _cost(target, ours) == int(
        (expected * Decimal(10**9)).to_integral_value("ROUND_CEILING")
    )


def test_rate_tiers_apply_to_every_token_past_the_threshold() -> None:
    rate = Rate(Decimal(3), ((200_000, Decimal(6)),))
    assert (rate.at(200_000), rate.at(200_001)) == (Decimal(3), Decimal(6))
    price = Price(rate, Rate(Decimal(15)))
    assert price.cost_nanos(Usage(input_tokens=200_001)) == 200_001 * 6 * 1000


# --- where prices come from, and overrides -------------------------------------------------


def test_prices_come_from_the_bundled_genai_prices_data() -> None:
    price = DATA.price("anthropic", "claude-3-7-sonnet-20250219")
    assert price is not None
    assert price.source == f"genai-prices {GENAI_PRICES_VERSION} anthropic/claude-3-7-sonnet-latest"
    assert (price.input.base, price.output.base) == (Decimal(3), Decimal(15))
    assert price.cache_creation_5m_input == Rate(Decimal("3.75"))
    assert price.cache_creation_1h_input == Rate(Decimal(6))
    # Models and servers the data has no price for: unpriced (cost 0).
    assert DATA.price("anthropic", "claude-fake") is None
    assert DATA.price("mock", "echo") is None
    assert DATA.price("openai_compatible", "llama3.1:8b", "http://127.0.0.1:11434/v1") is None
    # A hosted OpenAI-compatible server is found by its base URL.
    deepseek = DATA.price("openai_compatible", "deepseek-chat", "https://api.deepseek.com/v1")
    assert deepseek is not None


def test_every_dimension_can_be_overridden() -> None:
    override = PriceConfig(
        input_per_mtok=1,
        output_per_mtok=2,
        cached_input_per_mtok=3,
        cache_creation_5m_input_per_mtok=4,
        cache_creation_1h_input_per_mtok=5,
        reasoning_per_mtok=6,
    )
    usage = Usage(
        input_tokens=100 + 10 + 20 + 30,
        output_tokens=50,
        cached_input_tokens=10,
        cache_creation_5m_input_tokens=20,
        cache_creation_1h_input_tokens=30,
        reasoning_tokens=40,
    )
    expected = (100 * 1 + 10 * 3 + 20 * 4 + 30 * 5 + 10 * 2 + 40 * 6) * 1000
    assert _cost(SONNET_37, usage, **{"claude-3-7-sonnet": override}) == expected


def test_a_partial_override_keeps_the_other_rates_from_the_data() -> None:
    override = PriceConfig(cache_creation_1h_input_per_mtok=10)
    table = price_table({"claude-3-7": override}, {"claude": SONNET_37}, DATA)
    price = table.price(SONNET_37.ref)
    assert price is not None
    assert price.cache_creation_1h_input == Rate(Decimal(10))
    assert price.cache_creation_5m_input == Rate(Decimal("3.75"))
    assert price.source.endswith("+ pricing.claude-3-7")


def test_override_by_longest_prefix_and_for_unknown_models() -> None:
    targets = {
        "a": TargetSpec("a", "openai", "gpt-4o-2024-08-06"),
        "b": TargetSpec("b", "openai_compatible", "my-finetune-v2", base_url="http://10.0.0.5/v1"),
    }
    overrides = {
        "gpt-4o": PriceConfig(input_per_mtok=1, output_per_mtok=2),
        "gpt-4o-2024": PriceConfig(output_per_mtok=7),
        "my-finetune": PriceConfig(input_per_mtok=3, output_per_mtok=12),
    }
    table = price_table(overrides, targets, DATA)
    a = table.price(targets["a"].ref)
    b = table.price(targets["b"].ref)
    assert a is not None
    assert b is not None
    # The longest prefix wins; the rest of gpt-4o's rates come from genai-prices.
    assert a.output == Rate(Decimal(7))
    assert a.input == Rate(Decimal("2.5"))
    assert (b.input, b.output) == (Rate(Decimal(3)), Rate(Decimal(12)))
    # A call whose target the table was not built for is resolved by provider and model.
    # "gpt-4o-mini" starts with "gpt-4o": that override prices it; o3-mini is genai-prices'.
    mini = TargetRef("gone", "openai", "gpt-4o-mini")
    assert table.cost_nanos(mini, Usage(input_tokens=1_000_000)) == 1_000_000_000
    o3 = DATA.price("openai", "o3-mini")
    assert o3 is not None
    gone = TargetRef("gone", "openai", "o3-mini")
    assert table.cost_nanos(gone, Usage(input_tokens=1_000_000)) == int(o3.input.base * 10**9)


def test_unknown_model_with_partial_override_is_a_config_error(tmp_path: Path) -> None:
    config = textwrap.dedent(
        """
        targets:
          local: {provider: openai_compatible, model: my-model, base_url: "http://127.0.0.1:1/v1"}
        agents:
          a: {route: [local]}
        pricing:
          my-model: {output_per_mtok: 2}
        """
    )
    path = tmp_path / "c.yaml"
    path.write_text(config)
    with pytest.raises(ConfigError, match=r"pricing.my-model: genai-prices has no price"):
        load(path, {})


# --- end to end: carried in the contract and priced --------------------------------------


async def test_anthropic_cache_writes_are_carried_and_priced_end_to_end() -> None:
    async with AnthropicFake() as fake:
        config = f"""
        targets:
          claude:
            provider: anthropic
            model: claude-3-7-sonnet-20250219
            base_url: {fake.base_url}
            api_key: {{env: ANTHROPIC_API_KEY}}
        agents:
          chat: {{route: [claude]}}
        """
        fake.push(
            AnthropicScenario(usage=(3, 550), cache_write_5m_tokens=12304),
            AnthropicScenario(usage=(3, 550), cache_write_1h_tokens=12304, cache_read_tokens=7),
        )
        async with serve_config(config, {"ANTHROPIC_API_KEY": ANTHROPIC_KEY}) as served:
            first = await served.client.invoke("chat", "hi")
            events = [e async for e in served.client.stream("chat", "hi")]

    u = first.usage
    assert (u.input_tokens, u.output_tokens) == (12307, 550)
    assert (u.cache_creation_5m_input_tokens, u.cache_creation_1h_input_tokens) == (12304, 0)
    assert u.cost_usd == pytest.approx(0.054399, abs=1e-9)
    (streamed,) = [e.usage for e in events if e.WhichOneof("event") == "usage"]
    assert (streamed.input_tokens, streamed.cached_input_tokens) == (12314, 7)
    assert streamed.cache_creation_1h_input_tokens == 12304
    assert streamed.cost_usd == pytest.approx((3 * 3 + 7 * 0.3 + 12304 * 6 + 550 * 15) / 1e6)


async def test_openai_reasoning_tokens_are_carried_and_priced_by_override() -> None:
    async with OpenAIFake(Scenario(usage=(100, 50), reasoning_tokens=40, cached_tokens=60)) as fake:
        config = f"""
        targets:
          gpt:
            provider: openai
            model: gpt-fake
            base_url: {fake.base_url}/v1
            api_key: {{env: OPENAI_API_KEY}}
        pricing:
          gpt-fake: {{input_per_mtok: 1000, output_per_mtok: 2000, cached_input_per_mtok: 100,
                      reasoning_per_mtok: 5000}}
        agents:
          chat: {{route: [gpt]}}
        """
        async with serve_config(config, {"OPENAI_API_KEY": OPENAI_KEY}) as served:
            answer = await served.client.invoke("chat", "hi")

    u = answer.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens) == (
        100,
        60,
        50,
        40,
    )
    assert not u.estimated
    assert u.cost_usd == pytest.approx((40 * 1000 + 60 * 100 + 10 * 2000 + 40 * 5000) / 1e6)


@pytest.mark.parametrize("backend", ["embedded", "shared"])
async def test_get_usage_reports_every_dimension(backend: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(AnthropicFake())
        state = ""
        if backend == "shared":
            schema = await stack.enter_async_context(postgres_schema())
            prefix = await stack.enter_async_context(redis_prefix())
            state = shared_state_yaml(schema, prefix)
        config = textwrap.dedent(
            f"""
            targets:
              claude:
                provider: anthropic
                model: claude-3-7-sonnet-20250219
                base_url: {fake.base_url}
                api_key: {{env: ANTHROPIC_API_KEY}}
            agents:
              chat: {{route: [claude]}}
            """
        )
        served = await stack.enter_async_context(
            serve_config(config + state, {"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
        )
        fake.push(
            AnthropicScenario(usage=(3, 550), cache_write_5m_tokens=12304),
            AnthropicScenario(usage=(3, 550), cache_write_1h_tokens=100, cache_read_tokens=7),
            AnthropicScenario(omit_usage=True),
        )
        before = time.time() - 1
        answers = [await served.client.invoke("chat", "hi") for _ in range(3)]
        start = timestamp_pb2.Timestamp()
        start.FromNanoseconds(int(before * 1e9))
        totals = await usage(served).GetUsage(upb.GetUsageRequest(start_time=start))

    (group,) = totals.groups
    assert group.calls == 3
    assert group.estimated_calls == 1
    assert group.cached_input_tokens == 7
    assert (group.cache_creation_5m_input_tokens, group.cache_creation_1h_input_tokens) == (
        12304,
        100,
    )
    assert group.input_tokens == sum(a.usage.input_tokens for a in answers)
    assert group.cost_usd == pytest.approx(sum(a.usage.cost_usd for a in answers))
