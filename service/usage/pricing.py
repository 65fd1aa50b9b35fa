"""Prices per model and the cost of one call, in integer nano-dollars (exact sums).

The shipped table holds list prices (USD per million tokens) of common models as published
when it was written; ``pricing:`` in config overrides or adds models. A model is looked up by
exact name, then by the longest configured name it starts with (``gpt-4o-2024-08-06`` →
``gpt-4o``). An unpriced model costs 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from service.domain import Usage

if TYPE_CHECKING:
    from service.config.state_model import PriceConfig

NANOS_PER_USD = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "claude-3-haiku": Price(0.25, 1.25, 0.03),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    "claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
    "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
}


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def price(self, model: str) -> Price | None:
        """The price of ``model``, or None when it has none."""
        exact = self.prices.get(model)
        if exact is not None:
            return exact
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def cost_nanos(self, model: str, usage: Usage) -> int:
        """What ``usage`` of ``model`` costs, rounded up to the nano-dollar."""
        price = self.price(model)
        if price is None:
            return 0
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_rate = (
            price.input_per_mtok
            if price.cached_input_per_mtok is None
            else price.cached_input_per_mtok
        )
        # USD per Mtok * tokens = micro-dollars; * 1000 = nano-dollars.
        micro = (
            (usage.input_tokens - cached) * price.input_per_mtok
            + cached * cached_rate
            + usage.output_tokens * price.output_per_mtok
        )
        return _ceil(micro * 1000)

    def estimate_nanos(self, model: str, input_tokens: int, output_tokens: int) -> int:
        """An upper estimate of a call's cost (every input token at the full rate)."""
        return self.cost_nanos(model, Usage(input_tokens=input_tokens, output_tokens=output_tokens))


def _ceil(value: float) -> int:
    # Rounded first so that float noise (150.00000000001) does not add a nano-dollar.
    return math.ceil(round(value, 6))


def price_table(overrides: Mapping[str, PriceConfig]) -> PriceTable:
    """The shipped table with ``overrides`` (from config) applied."""
    prices = dict(DEFAULT_PRICES)
    for model, price in overrides.items():
        prices[model] = Price(
            price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok
        )
    return PriceTable(prices)


def usd(nanos: int) -> float:
    return nanos / NANOS_PER_USD
