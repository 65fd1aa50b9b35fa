"""Config sections of state: ``state``, ``pricing``, ``budgets``, and the per-agent
``memory`` and ``cache`` settings.

Kept apart from :mod:`service.config.model` so state's settings live in one module; the
top-level :class:`~service.config.model.Config` includes them as new top-level keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from service.config.base import FrozenModel, SecretRef


class MemoryConfig(FrozenModel):
    """How much of a session's history an agent sees (the newest turns that fit)."""

    max_turns: int = Field(20, ge=1, le=10_000, description="most past turns loaded")
    max_tokens: int | None = Field(
        None, ge=1, description="most estimated tokens of history loaded (4 chars ~ 1 token)"
    )


class CacheConfig(FrozenModel):
    """The agent's response cache: off, on for every request, or only when a request asks."""

    mode: Literal["off", "on", "opt_in"] = "off"
    ttl_s: float = Field(300.0, gt=0, le=30 * 86400)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: object) -> object:
        # YAML 1.1 reads a bare `on`/`off` as a boolean: take it as the word it was.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value


class StateConfig(FrozenModel):
    """Where state lives: ``embedded`` (SQLite file + process memory; one process) or
    ``shared`` (PostgreSQL + Redis; any number of replicas)."""

    backend: Literal["embedded", "shared"] = "embedded"
    data_dir: str = Field(
        "data",
        min_length=1,
        description="embedded: the SQLite file's folder (relative to the config file)",
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field("switchboard", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    postgres_dsn: SecretRef | str = "postgresql://postgres@127.0.0.1:5432/postgres"
    postgres_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool_size: int = Field(10, ge=1, le=200)
    timeout_s: float = Field(2.0, gt=0, description="limit on every store call")
    migrate: bool = Field(True, description="create and migrate the schema at start")
    idempotency_ttl_s: float = Field(86400.0, gt=0, description="how long request ids are kept")
    reservation_ttl_s: float = Field(
        600.0, gt=0, description="unsettled budget reservations expire after this"
    )
    budget_rebuild_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="shared: after Redis lost the budget counters, nothing is admitted for "
        "this long while every replica holds again its calls in flight and its outbox's "
        "lines (each checks every quarter of it)",
    )
    health_interval_s: float = Field(5.0, gt=0, description="how often stores are pinged")
    memory_max_entries: int = Field(
        100_000,
        ge=1,
        description="embedded: most response-cache entries kept in memory (the least "
        "recently used is evicted)",
    )


class PriceConfig(FrozenModel):
    """USD per million tokens, per usage dimension. Each one set replaces genai-prices' rate
    for the model; unset ones keep it (a model genai-prices lacks needs input and output)."""

    input_per_mtok: float | None = Field(None, ge=0, description="uncached prompt tokens")
    output_per_mtok: float | None = Field(None, ge=0, description="generated tokens")
    cached_input_per_mtok: float | None = Field(
        None, ge=0, description="cache reads (default: the input rate)"
    )
    cache_creation_5m_input_per_mtok: float | None = Field(
        None, ge=0, description="writes to the 5-minute prompt cache (default: the input rate)"
    )
    cache_creation_1h_input_per_mtok: float | None = Field(
        None, ge=0, description="writes to the 1-hour prompt cache (default: the 5-minute rate)"
    )
    reasoning_per_mtok: float | None = Field(
        None, ge=0, description="reasoning tokens, part of the output (default: the output rate)"
    )


class BudgetConfig(FrozenModel):
    """A spending limit per tenant (or per API key of a tenant) per UTC day or month."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tenant: str = Field("*", min_length=1, description="a tenant, or '*' for each tenant")
    per_key: bool = Field(False, description="a separate budget for each API key")
    period: Literal["day", "month"]
    limit_usd: float = Field(ge=0)
