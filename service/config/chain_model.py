"""Config sections of the interceptor chain: ``auth``, ``rate_limits`` and ``observability``.

Kept apart from :mod:`service.config.model` so the chain's settings live in one module; the
top-level :class:`~service.config.model.Config` includes them as new top-level keys.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from service.config.base import FrozenModel

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AuthConfig(FrozenModel):
    """API keys. Keys are stored only as hashes (see ``switchboard keys``)."""

    enabled: bool = Field(True, description="off is allowed only on a loopback address")
    keys_file: str | None = Field(None, description="YAML file written by `switchboard keys`")
    keys_env: str | None = Field(
        None, description="environment variable holding the same YAML as a keys file"
    )
    refresh_interval_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="how often each replica re-reads the keys of the state store (AdminService)",
    )
    exempt_methods: list[str] = Field(
        default_factory=lambda: [HEALTH_PREFIX],
        description="method prefixes (/package.Service/ or /package.Service/Method) "
        "served without a key",
    )
    reflection: Literal["open", "auth"] = Field(
        "open", description="open: no key needed; auth: a key is (server.reflection turns it off)"
    )

    def exempt_prefixes(self) -> tuple[str, ...]:
        extra = REFLECTION_PREFIXES if self.reflection == "open" else ()
        return tuple(self.exempt_methods) + extra


class LimitsConfig(FrozenModel):
    """Limits for one subject (a tenant or a key); unset means unlimited."""

    requests_per_min: int | None = Field(None, ge=1)
    tokens_per_min: int | None = Field(None, ge=1, description="input + output tokens")
    concurrent_streams: int | None = Field(None, ge=1)

    def over(self, default: LimitsConfig) -> LimitsConfig:
        """These limits, with every unset one taken from ``default``."""
        return LimitsConfig(
            requests_per_min=self.requests_per_min or default.requests_per_min,
            tokens_per_min=self.tokens_per_min or default.tokens_per_min,
            concurrent_streams=self.concurrent_streams or default.concurrent_streams,
        )


class RedisLimiterConfig(FrozenModel):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field("switchboard:rl:", min_length=1)
    timeout_s: float = Field(
        1.0, gt=0, description="per Redis command, and per wait for a pooled connection"
    )
    pool_size: int = Field(32, ge=1, le=1000, description="Redis connections per process")
    on_error: Literal["open", "closed"] = Field(
        "open", description="when Redis fails: let calls through (open) or refuse them (closed)"
    )
    retry_after_error_s: float = Field(
        0.1,
        gt=0,
        le=5.0,
        description="while Redis is down, ping it this often (calls do not wait on it)",
    )


class RateLimitsConfig(FrozenModel):
    backend: Literal["memory", "redis"] = "memory"
    redis: RedisLimiterConfig = RedisLimiterConfig()
    tenant: LimitsConfig = Field(default_factory=LimitsConfig, description="every tenant's")
    key: LimitsConfig = Field(default_factory=LimitsConfig, description="every key's")
    tenants: dict[str, LimitsConfig] = Field(
        default_factory=dict, description="per tenant name, over `tenant`"
    )
    keys: dict[str, LimitsConfig] = Field(
        default_factory=dict, description="per key id, over `key`"
    )


class TracingConfig(FrozenModel):
    """Where spans go. Each key left unset takes the standard OTEL_* variable, then the
    default (docs/observability.md; :mod:`service.observability.otel_env`)."""

    exporter: Literal["none", "otlp", "console"] | None = Field(
        None,
        description="unset: OTEL_TRACES_EXPORTER, else otlp when an OTLP endpoint is set, "
        "else none",
    )
    otlp_endpoint: str | None = Field(
        None, description="unset: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otlp_protocol: Literal["grpc", "http/protobuf"] | None = Field(
        None, description="unset: OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, else grpc"
    )
    otlp_insecure: bool | None = Field(
        None,
        description="unset: OTEL_EXPORTER_OTLP_(TRACES_)INSECURE, else the endpoint's scheme "
        "(http: plaintext)",
    )
    service_name: str | None = Field(
        None, description="unset: OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, else switchboard"
    )
    sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="of traces started here (parent-based); unset: OTEL_TRACES_SAMPLER(_ARG)",
    )
    exclude_services: list[str] | None = Field(
        None,
        description="gRPC services with no server spans; unset: "
        "OTEL_PYTHON_GRPC_EXCLUDED_SERVICES, else health and reflection",
    )


class MetricsConfig(FrozenModel):
    host: str = "127.0.0.1"
    port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus /metrics port; unset: not exposed"
    )


class LogsConfig(FrozenModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"
    calls: bool = Field(True, description="one line per call")


class ObservabilityConfig(FrozenModel):
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()
    logs: LogsConfig = LogsConfig()
