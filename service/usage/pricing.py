"""Prices per target and the cost of one call, in integer nano-dollars (exact sums).

Prices come from the maintained ``genai-prices`` database (:mod:`service.usage.price_data`,
its data bundled with the package: nothing is fetched at run time), resolved once per target
when a config snapshot is built. ``pricing:`` in config overrides any dimension of a model
(matched by exact name, then by the longest configured name it starts with:
``gpt-4o-2024-08-06`` → ``gpt-4o``) or prices a model the database lacks. A target without a
price (the mock models, a self-hosted server) costs 0.

Every dimension of :class:`service.domain.Usage` has its own rate: uncached input, cache
reads, cache writes to the 5-minute and the 1-hour cache, output, and reasoning (part of the
output). A dimension without a rate of its own is charged at its parent's, as genai-prices
does it: cache reads and 5-minute writes at the input rate, 1-hour writes at the 5-minute
write rate, reasoning at the output rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from service.domain import TargetRef, Usage

if TYPE_CHECKING:
    from service.config.state_model import PriceConfig
    from service.providers.base import TargetSpec
    from service.usage.price_data import PriceData

NANOS_PER_USD = 1_000_000_000
_NANOS_PER_USD_PER_MTOK = Decimal(1000)
"""1 USD per million tokens is 1000 nano-dollars a token."""


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million tokens; ``tiers`` are (input-token threshold, rate) pairs in ascending
    order: once a call's whole input passes a threshold, every token of this kind costs that
    tier's rate (the "cliff" rule of genai-prices and of the providers' long-context prices)."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()

    def at(self, input_tokens: int) -> Decimal:
        for start, rate in reversed(self.tiers):
            if input_tokens > start:
                return rate
        return self.base


@dataclass(frozen=True, slots=True)
class Price:
    """A model's rates by usage dimension (``None``: charged at the parent dimension's rate)
    and where they came from, e.g. ``genai-prices anthropic/claude-3-7-sonnet-latest``."""

    input: Rate
    output: Rate
    cached_input: Rate | None = None
    cache_creation_5m_input: Rate | None = None
    cache_creation_1h_input: Rate | None = None
    reasoning: Rate | None = None
    source: str = ""

    def cost_nanos(self, usage: Usage) -> int:
        """What ``usage`` costs at these rates, rounded up to the nano-dollar.

        Counts are clamped so that parts never exceed their whole (cache reads and writes
        within ``input_tokens``, reasoning within ``output_tokens``).
        """
        n = usage.input_tokens
        read = min(usage.cached_input_tokens, n)
        one_hour = min(usage.cache_creation_1h_input_tokens, n - read)
        five_min = min(usage.cache_creation_5m_input_tokens, n - read - one_hour)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        write_5m = self.cache_creation_5m_input or self.input
        usd_per_mtok_tokens = (
            (n - read - one_hour - five_min) * self.input.at(n)
            + read * (self.cached_input or self.input).at(n)
            + five_min * write_5m.at(n)
            + one_hour * (self.cache_creation_1h_input or write_5m).at(n)
            + (usage.output_tokens - reasoning) * self.output.at(n)
            + reasoning * (self.reasoning or self.output).at(n)
        )
        return math.ceil(usd_per_mtok_tokens * _NANOS_PER_USD_PER_MTOK)

    def overridden_by(self, override: PriceConfig, name: str) -> Price:
        """These rates with every dimension ``override`` (``pricing.<name>``) sets replaced."""
        rates = {
            dimension: Rate(Decimal(str(value)))
            for dimension, value in _override_rates(override).items()
            if value is not None
        }
        source = f"{self.source} + pricing.{name}" if self.source else f"pricing.{name}"
        return replace(self, **rates, source=source)


def _override_rates(override: PriceConfig) -> dict[str, float | None]:
    return {
        "input": override.input_per_mtok,
        "output": override.output_per_mtok,
        "cached_input": override.cached_input_per_mtok,
        "cache_creation_5m_input": override.cache_creation_5m_input_per_mtok,
        "cache_creation_1h_input": override.cache_creation_1h_input_per_mtok,
        "reasoning": override.reasoning_per_mtok,
    }


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The price of each configured target, resolved when the snapshot was built."""

    targets: Mapping[str, Price | None] = field(default_factory=dict)
    models: Mapping[str, TargetRef] = field(default_factory=dict)
    """The target each price was resolved for (a reply naming another model is re-resolved)."""
    overrides: Mapping[str, PriceConfig] = field(default_factory=dict)
    data: PriceData | None = None

    def price(self, target: TargetRef) -> Price | None:
        """The price of ``target``'s model, or None when it has none.

        A target this table was built for is a dictionary lookup; another (a snapshot swapped
        while the call ran) is resolved from the overrides and the database by its provider.
        """
        if self.models.get(target.name) == target:
            return self.targets.get(target.name)
        return resolve(target.provider, target.model, None, self.overrides, self.data)

    def cost_nanos(self, target: TargetRef, usage: Usage) -> int:
        """What ``usage`` of ``target`` costs, rounded up to the nano-dollar (0 unpriced)."""
        price = self.price(target)
        return 0 if price is None else price.cost_nanos(usage)

    def estimate_nanos(self, target: TargetRef, input_tokens: int, output_tokens: int) -> int:
        """An upper estimate of a call's cost (every input token at the uncached rate)."""
        return self.cost_nanos(
            target, Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        )


def resolve(
    provider: str,
    model: str,
    base_url: str | None,
    overrides: Mapping[str, PriceConfig],
    data: PriceData | None,
) -> Price | None:
    """The price of ``model`` served by ``provider``: the database's, with the matching
    ``pricing:`` override (exact name, else the longest prefix) applied on top.

    Raises:
        ValueError: the override leaves the input or output rate unset and the database
            does not know the model.
    """
    found = data.price(provider, model, base_url) if data is not None else None
    name = (
        model
        if model in overrides
        else max((n for n in overrides if model.startswith(n)), key=len, default=None)
    )
    if name is None:
        return found
    override = overrides[name]
    if found is None:
        if override.input_per_mtok is None or override.output_per_mtok is None:
            raise ValueError(
                f"pricing.{name}: genai-prices has no price for model {model!r} "
                f"(provider {provider}); set input_per_mtok and output_per_mtok"
            )
        found = Price(Rate(Decimal(0)), Rate(Decimal(0)))
    return found.overridden_by(override, name)


def price_table(
    overrides: Mapping[str, PriceConfig],
    targets: Mapping[str, TargetSpec] | None = None,
    data: PriceData | None = None,
) -> PriceTable:
    """Every target's price: ``data`` (genai-prices) with ``overrides`` (from config) applied.

    Raises:
        ValueError: an override a target needs leaves a rate unset that the database lacks.
    """
    targets = targets or {}
    prices = {
        name: resolve(t.provider, t.model, t.base_url, overrides, data)
        for name, t in targets.items()
    }
    refs = {name: t.ref for name, t in targets.items()}
    return PriceTable(prices, refs, dict(overrides), data)


def usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD
