"""Model prices from ``genai-prices`` (github.com/pydantic/genai-prices), its bundled data.

The package's data is a maintained, dated price history of the major providers (OpenAI,
Anthropic, Google, Mistral, DeepSeek, Groq, …), per model, with cache-read, cache-write by TTL
and long-context tiers. Only the data bundled with the installed package is used: its
``UpdatePrices`` (which downloads fresh data from GitHub) is never started, so a price is the
same on every replica and in CI without internet. Upgrading the package updates the prices.

Built once per config snapshot (the import of the data, about a third of a second, happens
the first time); a lookup is done once per target, never per call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import __version__ as GENAI_PRICES_VERSION  # noqa: N812 (a constant)
from genai_prices import data as bundled
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelPrice, TieredPrices

from service.usage.pricing import Price, Rate

__all__ = ["GENAI_PRICES_VERSION", "PriceData"]

# Switchboard's provider kinds → genai-prices provider ids. ``openai_compatible`` is found by
# its base_url (api.deepseek.com, api.groq.com, …); a self-hosted one matches none.
_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic"}
# Each usage dimension → the genai-prices price keys that can hold its rate, first found wins.
_KEYS = {
    "input": ("input_mtok",),
    "output": ("output_mtok",),
    "cached_input": ("cache_read_mtok",),
    "cache_creation_5m_input": ("cache_write_5m_mtok", "cache_write_mtok"),
    "cache_creation_1h_input": ("cache_write_1h_mtok",),
    "reasoning": ("output_reasoning_mtok",),
}


class PriceData:
    """The bundled genai-prices database, looked up by provider kind, model and base URL."""

    def __init__(self) -> None:
        self._snapshot = DataSnapshot(providers=bundled.providers, from_auto_update=False)

    def price(self, provider: str, model: str, base_url: str | None = None) -> Price | None:
        """The current price of ``model`` at ``provider`` (a Switchboard provider kind), or
        None when the database has no such provider or model, or no input and output rate."""
        provider_id = _PROVIDER_IDS.get(provider)
        url = base_url if provider == "openai_compatible" else None
        if provider_id is None and url is None:
            return None
        try:
            found, info = self._snapshot.find_provider_model(model, None, provider_id, url)
        except LookupError:
            return None
        prices = info.get_prices(datetime.now(UTC))
        rates = {dimension: _rate(prices, keys) for dimension, keys in _KEYS.items()}
        input_rate, output_rate = rates["input"], rates["output"]
        if input_rate is None or output_rate is None:
            return None
        return Price(
            input_rate,
            output_rate,
            cached_input=rates["cached_input"],
            cache_creation_5m_input=rates["cache_creation_5m_input"],
            cache_creation_1h_input=rates["cache_creation_1h_input"],
            reasoning=rates["reasoning"],
            source=f"genai-prices {GENAI_PRICES_VERSION} {found.id}/{info.id}",
        )


def _rate(prices: ModelPrice, keys: tuple[str, ...]) -> Rate | None:
    for key in keys:
        value = getattr(prices, key, None)
        if isinstance(value, TieredPrices):
            return Rate(value.base, tuple((t.start, t.price) for t in value.tiers))
        if isinstance(value, Decimal):
            return Rate(value)
    return None
