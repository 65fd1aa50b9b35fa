"""The config file's schema: frozen pydantic models, so every error names its field path."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ProviderKind = Literal["mock", "openai", "anthropic", "openai_compatible"]
OverridableParameter = Literal[
    "temperature", "max_tokens", "top_p", "stop", "seed", "response_format"
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    grace_s: float = Field(10.0, ge=0, description="drain period for in-flight calls")
    reflection: bool = True
    default_deadline_s: float = Field(
        120.0, gt=0, description="deadline for calls that arrive without one"
    )
    max_receive_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_send_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_messages: int = Field(1000, ge=1, description="most messages in one request")


class SecretRef(_Model):
    """Where a secret comes from: an environment variable or a file. Never the value."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self


class ResponseFormatConfig(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema_name: str = ""
    json_schema: dict[str, Any] | None = None
    strict: bool = False


class ParametersConfig(_Model):
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None
    response_format: ResponseFormatConfig | None = None


class MockConfig(_Model):
    """Options of the built-in mock provider."""

    ttft_s: float = Field(0.0, ge=0, description="delay before the first token")
    tokens_per_s: float = Field(0.0, ge=0, description="streaming speed; 0 means no delay")


class TargetConfig(_Model):
    provider: ProviderKind
    model: str = Field(min_length=1)
    base_url: str | None = None
    api_key: SecretRef | None = None
    parameters: ParametersConfig = ParametersConfig()
    timeout_s: float | None = Field(None, gt=0)
    mock: MockConfig = MockConfig()


class ToolConfig(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MemoryConfig(_Model):
    """How much of a session's history an agent sees (the newest turns that fit)."""

    max_turns: int = Field(20, ge=1, le=10_000, description="most past turns loaded")
    max_tokens: int | None = Field(
        None, ge=1, description="most estimated tokens of history loaded (4 chars ~ 1 token)"
    )


class CacheConfig(_Model):
    """The agent's response cache: off, on for every request, or only when a request asks."""

    mode: Literal["off", "on", "opt_in"] = "off"
    ttl_s: float = Field(300.0, gt=0, le=30 * 86400)


class AgentConfig(_Model):
    description: str = ""
    version: str | None = Field(None, min_length=1, max_length=64)
    system_prompt: str = ""
    route: list[str] = Field(min_length=1, description="target names, in order of preference")
    parameters: ParametersConfig = ParametersConfig()
    overridable_parameters: list[OverridableParameter] = Field(default_factory=list)
    tools: list[ToolConfig] = Field(default_factory=list)
    accepts_caller_tools: bool = False
    memory: MemoryConfig = MemoryConfig()
    cache: CacheConfig = CacheConfig()


class StateConfig(_Model):
    """Where state lives: ``embedded`` (SQLite file + process memory; one process) or
    ``shared`` (PostgreSQL + Redis; any number of replicas)."""

    backend: Literal["embedded", "shared"] = "embedded"
    data_dir: str = Field("data", min_length=1, description="embedded: the SQLite file's folder")
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
    health_interval_s: float = Field(5.0, gt=0, description="how often stores are pinged")


class PriceConfig(_Model):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


class BudgetConfig(_Model):
    """A spending limit per tenant (or per API key of a tenant) per UTC day or month."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tenant: str = Field("*", min_length=1, description="a tenant, or '*' for each tenant")
    per_key: bool = Field(False, description="a separate budget for each API key")
    period: Literal["day", "month"]
    limit_usd: float = Field(ge=0)


class Config(_Model):
    server: ServerConfig = ServerConfig()
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    agents: dict[str, AgentConfig] = Field(min_length=1)
    state: StateConfig = StateConfig()
    pricing: dict[str, PriceConfig] = Field(
        default_factory=dict, description="per model name; overrides the shipped table"
    )
    budgets: list[BudgetConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        for kind, names in (("targets", self.targets), ("agents", self.agents)):
            for name in names:
                if not NAME_PATTERN.match(name):
                    raise ValueError(
                        f"{kind}.{name}: names are letters, digits, '_', '-', '.' "
                        "(at most 64, starting with a letter or digit)"
                    )
        for agent_name, agent in self.agents.items():
            for i, target in enumerate(agent.route):
                if target not in self.targets:
                    raise ValueError(
                        f"agents.{agent_name}.route[{i}]: no target named {target!r} "
                        f"(targets: {', '.join(sorted(self.targets)) or 'none'})"
                    )
        budget_names = [b.name for b in self.budgets]
        if len(set(budget_names)) != len(budget_names):
            raise ValueError("budgets: each budget needs its own name")
        return self
