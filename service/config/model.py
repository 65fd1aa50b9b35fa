"""The config file's schema: frozen pydantic models, so every error names its field path."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from service.config.base import FrozenModel, SecretRef
from service.config.chain_model import (
    AuthConfig,
    ObservabilityConfig,
    RateLimitsConfig,
    is_loopback,
)
from service.config.guards_model import AgentGuardsConfig, GuardConfig, check_references
from service.config.state_model import (
    BudgetConfig,
    CacheConfig,
    MemoryConfig,
    PriceConfig,
    StateConfig,
)
from service.config.tools_model import (
    HttpToolConfig,
    LoopConfig,
    McpServerConfig,
    check_tool_references,
)
from service.config.workflows_model import WorkflowConfig, check_workflows
from service.routing.config import ResilienceConfig, Route, route_names
from service.schemas import schema_problem

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ProviderKind = Literal["mock", "openai", "anthropic", "openai_compatible"]
OverridableParameter = Literal[
    "temperature", "max_tokens", "top_p", "stop", "seed", "response_format"
]


_ORIGIN = re.compile(r"^https?://[^/\s:]+(:\d{1,5})?$")


class CorsConfig(FrozenModel):
    """Which web pages (origins) a browser lets call the HTTP doors (CORS). Empty: none
    (requests from other tools are not affected). Applies from the next start."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description="exact origins such as https://app.example.com (no path), or '*'",
    )
    allow_origin_regex: str | None = Field(
        None, description=r"origins matching it in full, e.g. https://.*\.example\.com"
    )
    max_age_s: int = Field(600, ge=0, le=86400, description="how long a browser caches a preflight")

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], without a path or "
                    "trailing slash (a browser sends e.g. http://localhost:3000)"
                )
        return value

    @field_validator("allow_origin_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.allow_origins) or self.allow_origin_regex is not None


class HttpConfig(FrozenModel):
    """The HTTP listener: the OpenAI- and Anthropic-compatible doors, Connect and gRPC-Web,
    in the gRPC server's process (docs/doors.md)."""

    host: str | None = Field(None, description="unset: the gRPC server's host")
    port: int | None = Field(None, ge=0, le=65535, description="unset: no HTTP listener")
    cors: CorsConfig = CorsConfig()


class TlsConfig(FrozenModel):
    """TLS on both listeners (gRPC and HTTP): PEM files, relative to the config file's folder,
    re-read when they change (docs/security.md)."""

    cert_file: str = Field(min_length=1, description="certificate chain (PEM), leaf first")
    key_file: str = Field(min_length=1, description="the certificate's private key (PEM)")
    client_ca_file: str | None = Field(
        None, description="CA bundle (PEM) client certificates must chain to: mTLS, required"
    )


class ServerConfig(FrozenModel):
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
    http: HttpConfig = HttpConfig()
    tls: TlsConfig | None = Field(None, description="unset: plaintext (a mesh's TLS, say)")
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="the event loop `serve` runs on: uvloop (libuv), or the standard "
        "library's (SWITCHBOARD_SERVER__EVENT_LOOP=asyncio); fixed at start",
    )


class ResponseFormatConfig(FrozenModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema_name: str = ""
    json_schema: dict[str, Any] | None = None
    strict: bool = False

    @field_validator("json_schema")
    @classmethod
    def _a_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (problem := schema_problem(value)) is not None:
            raise ValueError(problem)
        return value


class ParametersConfig(FrozenModel):
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None
    response_format: ResponseFormatConfig | None = None


MockFault = Literal[
    "unavailable",  # HTTP 503
    "overloaded",  # HTTP 529
    "rate_limited",  # HTTP 429 (with retry_after_s)
    "resource_exhausted",  # HTTP 429 naming an exhausted quota
    "deadline_exceeded",  # the upstream timed out
    "invalid_argument",  # HTTP 400
    "context_window_exceeded",  # HTTP 400: the prompt does not fit the model's window
    "content_policy",  # HTTP 400: refused by the upstream's content filter
    "unauthenticated",  # HTTP 401: Switchboard's key refused
    "model_not_found",  # HTTP 404
]


class MockConfig(FrozenModel):
    """Options of the built-in mock provider, fault switches included (for chaos drills)."""

    ttft_s: float = Field(0.0, ge=0, description="delay before the first token")
    tokens_per_s: float = Field(0.0, ge=0, description="streaming speed; 0 means no delay")
    seed: int | None = Field(None, description="seeds the fault and latency draws")
    fail_first: int = Field(0, ge=0, description="the first N calls fail with `error`")
    fail_rate: float = Field(0.0, ge=0, le=1, description="share of calls that fail")
    error: MockFault = "unavailable"
    retry_after_s: float | None = Field(None, ge=0, description="sent with the failures")
    hang: bool = Field(False, description="never answer (until cancelled or out of time)")
    drop_after_tokens: int | None = Field(
        None, ge=0, description="drop the stream after N tokens (UNAVAILABLE)"
    )
    tail_rate: float = Field(0.0, ge=0, le=1, description="share of calls with a slow start")
    tail_ttft_s: float = Field(0.0, ge=0, description="delay before the first token in the tail")


class OpenAIOptions(FrozenModel):
    """Options of the ``openai`` and ``openai_compatible`` providers."""

    include_usage: bool = Field(
        True,
        description="send stream_options.include_usage (a server that ignores it, or a target "
        "with this off, answers with an estimated usage); turn off only for a server that "
        "rejects stream_options",
    )
    organization: str | None = Field(None, description="OpenAI-Organization header")
    project: str | None = Field(None, description="OpenAI-Project header")


class AnthropicOptions(FrozenModel):
    """Options of the ``anthropic`` provider."""

    max_tokens: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="max_tokens sent when neither the request, the agent nor the target's "
        "parameters set one (the Messages API requires it)",
    )


_KEYED_PROVIDERS = ("openai", "anthropic")
_OPTION_SECTIONS: dict[str, tuple[str, ...]] = {
    "mock": ("mock",),
    "openai": ("openai", "openai_compatible"),
    "anthropic": ("anthropic",),
}


class TargetConfig(FrozenModel):
    provider: ProviderKind
    model: str = Field(min_length=1)
    base_url: str | None = Field(None, pattern=r"^https?://\S+$")
    api_key: SecretRef | None = None
    parameters: ParametersConfig = ParametersConfig()
    timeout_s: float | None = Field(None, gt=0)
    first_token_timeout_s: float | None = Field(
        None, gt=0, description="time from an attempt's start to its first event"
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, description="longest silence between two events of an answer"
    )
    mock: MockConfig = MockConfig()
    openai: OpenAIOptions = OpenAIOptions()
    anthropic: AnthropicOptions = AnthropicOptions()

    @model_validator(mode="after")
    def _provider_needs(self) -> TargetConfig:
        if self.provider in _KEYED_PROVIDERS and self.api_key is None:
            raise ValueError(
                f"provider {self.provider!r} needs an api_key: "
                "{env: VARIABLE_NAME} or {file: /path/to/key} (never the key itself)"
            )
        if self.provider == "openai_compatible" and not self.base_url:
            raise ValueError(
                "provider 'openai_compatible' needs a base_url, e.g. http://127.0.0.1:8000/v1"
            )
        for section, kinds in _OPTION_SECTIONS.items():
            if section in self.model_fields_set and self.provider not in kinds:
                raise ValueError(
                    f"the '{section}' options apply only to provider {' or '.join(kinds)}, "
                    f"not {self.provider!r}"
                )
        return self


class ToolConfig(FrozenModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        """As a caller's tool (service.agents.validate): a JSON schema of type object."""
        if value.get("type", "object") != "object":
            raise ValueError("the arguments' schema must be of type object")
        if (problem := schema_problem(value)) is not None:
            raise ValueError(problem)
        return value


class AgentConfig(FrozenModel):
    description: str = ""
    version: str | None = Field(None, min_length=1, max_length=64)
    system_prompt: str = ""
    route: Route = Field(
        description="target names in order of preference, or a routing policy (docs/resilience.md)"
    )
    parameters: ParametersConfig = ParametersConfig()
    overridable_parameters: list[OverridableParameter] = Field(default_factory=list)
    tools: list[ToolConfig] = Field(default_factory=list)
    accepts_caller_tools: bool = False
    memory: MemoryConfig = MemoryConfig()
    cache: CacheConfig = CacheConfig()
    guards: AgentGuardsConfig | None = Field(
        None, description="guard names per stage (input, output, tool_call): docs/guards.md"
    )
    server_tools: list[str] = Field(
        default_factory=list,
        description="tools the server runs for this agent: '<mcp server>.<tool>', "
        "'<mcp server>.*' or an HTTP tool's name (README, Tools)",
    )
    loop: LoopConfig = LoopConfig()


class TransportConfig(FrozenModel):
    """Connection management and load shedding for the gRPC server (see docs/operations.md)."""

    max_concurrent_calls: int = Field(
        256, ge=1, description="Invoke+Stream calls in progress per process; past it, refused"
    )
    # grpc core counts a stream until it is wholly closed, so a client running 64 calls at
    # once on one connection already met REFUSED_STREAM (UNAVAILABLE) under a limit of 100.
    # Load is shed by max_concurrent_calls (RESOURCE_EXHAUSTED with RetryInfo); this only
    # bounds one connection's share, so it sits well above.
    max_concurrent_streams: int = Field(
        1000, ge=1, description="HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)"
    )
    keepalive_time_s: float = Field(60.0, gt=0, description="ping an idle client this often")
    keepalive_timeout_s: float = Field(20.0, gt=0, description="drop it if no ack by then")
    max_connection_idle_s: float = Field(600.0, gt=0)
    max_connection_age_s: float = Field(
        300.0, gt=0, description="GOAWAY after this, so clients reconnect and rebalance"
    )
    max_connection_age_grace_s: float = Field(
        150.0, ge=0, description="in-flight calls' time to finish after that GOAWAY"
    )
    min_client_ping_interval_s: float = Field(
        30.0, ge=0, description="clients pinging more often get GOAWAY (too_many_pings)"
    )
    permit_keepalive_without_calls: bool = False
    max_ping_strikes: int = Field(2, ge=0, description="bad pings tolerated; 0 means unlimited")


class ReloadConfig(FrozenModel):
    """Hot reload of this file (SIGHUP always reloads, whatever ``watch`` says)."""

    watch: bool = True
    poll_interval_s: float = Field(1.0, gt=0, le=60)


class WorkersConfig(FrozenModel):
    """``serve --workers N``: a supervisor and N worker processes sharing the port. The
    supervisor serves every worker's metrics on ``observability.metrics``."""

    count: int = Field(1, ge=1, le=64)
    restart_backoff_s: float = Field(0.5, gt=0, description="first restart delay, doubling")
    restart_backoff_max_s: float = Field(30.0, gt=0)
    startup_timeout_s: float = Field(60.0, gt=0)


class Config(FrozenModel):
    server: ServerConfig = ServerConfig()
    transport: TransportConfig = TransportConfig()
    reload: ReloadConfig = ReloadConfig()
    workers: WorkersConfig = WorkersConfig()
    targets: dict[str, TargetConfig] = Field(default_factory=dict)
    agents: dict[str, AgentConfig] = Field(min_length=1)
    workflows: dict[str, WorkflowConfig] = Field(
        default_factory=dict, description="multi-agent workflows, called like agents"
    )
    resilience: ResilienceConfig = ResilienceConfig()
    auth: AuthConfig = AuthConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    state: StateConfig = StateConfig()
    pricing: dict[str, PriceConfig] = Field(
        default_factory=dict,
        description="per model name (or name prefix); overrides genai-prices' rates",
    )
    budgets: list[BudgetConfig] = Field(default_factory=list)
    guards: dict[str, GuardConfig] = Field(
        default_factory=dict, description="named guards, listed per agent and stage"
    )
    mcp_servers: dict[str, McpServerConfig] = Field(
        default_factory=dict, description="MCP servers whose tools agents may call"
    )
    http_tools: dict[str, HttpToolConfig] = Field(
        default_factory=dict, description="tools that are one HTTP request each"
    )

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Config:
        http = self.server.http
        hosts = [("server.host", self.server.host)]
        if http.port is not None and http.host is not None:
            hosts.append(("server.http.host", http.host))
        for name, host in hosts:
            if not self.auth.enabled and not is_loopback(host):
                raise ValueError(
                    f"auth.enabled: auth may be off only when {name} is a loopback "
                    f"address (127.0.0.1, ::1, localhost), not {host!r}"
                )
        cors = http.cors
        if not self.auth.enabled and ("*" in cors.allow_origins or cors.allow_origin_regex):
            raise ValueError(
                "server.http.cors: with auth off, name the allowed origins one by one (any "
                "web page a developer opens could otherwise call this server and spend its "
                "upstream keys)"
            )
        return self

    @model_validator(mode="after")
    def _references(self) -> Config:
        named = (("targets", self.targets), ("agents", self.agents), ("workflows", self.workflows))
        for kind, names in named:
            for name in names:
                if not NAME_PATTERN.match(name):
                    raise ValueError(
                        f"{kind}.{name}: names are letters, digits, '_', '-', '.' "
                        "(at most 64, starting with a letter or digit)"
                    )
        for agent_name, agent in self.agents.items():
            on_route = route_names(agent.route)
            if not on_route:
                raise ValueError(f"agents.{agent_name}.route: at least one target is required")
            for i, target in enumerate(on_route):
                if target not in self.targets:
                    raise ValueError(
                        f"agents.{agent_name}.route[{i}]: no target named {target!r} "
                        f"(targets: {', '.join(sorted(self.targets)) or 'none'})"
                    )
        check_workflows(self.workflows, set(self.agents))
        for name in self.guards:
            if not NAME_PATTERN.match(name):
                raise ValueError(f"guards.{name}: names are letters, digits, '_', '-', '.'")
        check_references(self.guards, {name: a.guards for name, a in self.agents.items()})
        check_tool_references(
            self.mcp_servers,
            self.http_tools,
            {name: a.server_tools for name, a in self.agents.items()},
        )
        budget_names = [b.name for b in self.budgets]
        if len(set(budget_names)) != len(budget_names):
            raise ValueError("budgets: each budget needs its own name")
        for target in self.resilience.targets:
            if target not in self.targets:
                raise ValueError(f"resilience.targets.{target}: no target named {target!r}")
        return self
