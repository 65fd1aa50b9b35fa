"""The routing and resilience parts of the config file, and their conversion to policies.

``agents.<name>.route`` is either a list of target names (ordered fallback with the global
policies) or a mapping (:class:`RouteConfig`). The top-level ``resilience`` section holds the
defaults and per-target overrides (:class:`ResilienceConfig`). Partial overrides merge field
by field over the defaults: ``breaker: {fail_max: 3}`` keeps the default cool-down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.providers.base import TargetSpec
from service.routing.policy import (
    BreakerPolicy,
    BudgetPolicy,
    HedgePolicy,
    HedgeTo,
    RedisStorageSpec,
    ResilienceSpec,
    RetryPolicy,
    RoutePolicy,
    RouteTarget,
    Strategy,
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryConfig(_Model):
    max_attempts: int = Field(
        1, ge=1, le=10, description="attempts per target, the first included (1: no retry)"
    )
    backoff_base_s: float = Field(0.1, gt=0, description="first backoff cap; doubles per retry")
    backoff_max_s: float = Field(2.0, gt=0, description="largest backoff cap")
    max_retry_after_s: float = Field(
        10.0, ge=0, description="longest upstream retry-after to wait for"
    )


class HedgeConfig(_Model):
    delay_s: float | Literal["p95"] = Field(
        "p95", description="seconds before the hedge starts, or the target's observed p95"
    )
    min_delay_s: float = Field(0.02, ge=0)
    fallback_delay_s: float = Field(1.0, gt=0, description="p95 delay before enough samples")
    to: Literal["same", "next"] = "next"

    @model_validator(mode="after")
    def _positive(self) -> HedgeConfig:
        if isinstance(self.delay_s, float) and self.delay_s < 0:
            raise ValueError("delay_s must be >= 0 or 'p95'")
        return self


class BreakerConfig(_Model):
    fail_max: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    reset_timeout_s: float = Field(30.0, gt=0, description="cool-down before half-open probes")
    success_threshold: int = Field(1, ge=1, description="probe successes that close it")
    half_open_probes: int = Field(1, ge=1, description="probes allowed at once when half-open")


class BudgetConfig(_Model):
    ratio: float = Field(0.2, ge=0, le=10, description="extra attempts per call to the target")
    burst: float = Field(10.0, ge=0, description="tokens the bucket holds (and starts with)")
    min_per_s: float = Field(1.0, ge=0, description="tokens added per second regardless")


class RouteTargetConfig(_Model):
    target: str
    weight: int = Field(1, ge=1, le=10_000)
    attempt_timeout_s: float | None = Field(None, gt=0)
    first_token_timeout_s: float | None = Field(
        None, gt=0, description="time from an attempt's start to its first event"
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, description="longest silence between two events of an answer"
    )


RouteEntry = str | RouteTargetConfig


class RouteConfig(_Model):
    strategy: Literal["fallback", "weighted"] = "fallback"
    targets: list[RouteEntry] = Field(min_length=1)
    fallback: list[RouteEntry] = Field(default_factory=list)
    on_context_window_exceeded: list[RouteEntry] = Field(
        default_factory=list,
        description="targets (larger context windows) to try, in order, when a target "
        "answers CONTEXT_WINDOW_EXCEEDED",
    )
    retry: RetryConfig | None = None
    hedge: HedgeConfig | None = None
    attempt_timeout_s: float | None = Field(None, gt=0)
    first_token_timeout_s: float | None = Field(
        None, gt=0, description="time from an attempt's start to its first event"
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, description="longest silence between two events of an answer"
    )
    min_attempt_s: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _unique(self) -> RouteConfig:
        names = route_names(self)
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"a target appears more than once on the route: {', '.join(dupes)}")
        return self


class TargetResilienceConfig(_Model):
    breaker: BreakerConfig | None = None
    budget: BudgetConfig | None = None
    attempt_timeout_s: float | None = Field(None, gt=0)
    first_token_timeout_s: float | None = Field(
        None, gt=0, description="time from an attempt's start to its first event"
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, description="longest silence between two events of an answer"
    )


class RedisStorageConfig(_Model):
    url: str = Field(min_length=1, description="redis://host:port/db")
    namespace: str = Field("switchboard", min_length=1)


class ResilienceConfig(_Model):
    min_attempt_s: float = Field(
        0.05, ge=0, description="no attempt starts with less time than this left"
    )
    attempt_timeout_s: float | None = Field(None, gt=0, description="default per attempt")
    first_token_timeout_s: float | None = Field(
        None, gt=0, description="time from an attempt's start to its first event"
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, description="longest silence between two events of an answer"
    )
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    budget: BudgetConfig = BudgetConfig()
    breaker_redis: RedisStorageConfig | None = None
    targets: dict[str, TargetResilienceConfig] = Field(default_factory=dict)


Route = list[str] | RouteConfig


def _name(entry: RouteEntry) -> str:
    return entry if isinstance(entry, str) else entry.target


def route_names(route: Route) -> list[str]:
    """Every target name on ``route``, in configured order."""
    if isinstance(route, RouteConfig):
        every = (*route.targets, *route.fallback, *route.on_context_window_exceeded)
        return [_name(e) for e in every]
    return list(route)


_M = TypeVar("_M", bound=_Model)


def _merged(default: _M, override: _M | None) -> _M:
    if override is None:
        return default
    return default.model_copy(update=override.model_dump(exclude_unset=True))


def _breaker(config: BreakerConfig) -> BreakerPolicy:
    return BreakerPolicy(
        fail_max=config.fail_max,
        reset_timeout_s=config.reset_timeout_s,
        success_threshold=config.success_threshold,
        half_open_probes=config.half_open_probes,
    )


def _budget(config: BudgetConfig) -> BudgetPolicy:
    return BudgetPolicy(ratio=config.ratio, burst=config.burst, min_per_s=config.min_per_s)


def resilience_spec(config: ResilienceConfig) -> ResilienceSpec:
    """The per-target breaker and budget settings, overrides merged over defaults."""
    return ResilienceSpec(
        breakers={
            name: _breaker(_merged(config.breaker, t.breaker)) for name, t in config.targets.items()
        },
        budgets={
            name: _budget(_merged(config.budget, t.budget)) for name, t in config.targets.items()
        },
        default_breaker=_breaker(config.breaker),
        default_budget=_budget(config.budget),
        redis=(
            RedisStorageSpec(config.breaker_redis.url, config.breaker_redis.namespace)
            if config.breaker_redis
            else None
        ),
    )


def route_policy(
    route: Route, resilience: ResilienceConfig, targets: Mapping[str, TargetSpec]
) -> RoutePolicy:
    """The agent's route resolved: entries to targets, timeouts and retries to values.

    Each timeout of a target (``attempt_timeout_s``, ``first_token_timeout_s``,
    ``idle_timeout_s``) is the first set of: the route entry's, the route's,
    ``resilience.targets.<name>``'s, the target's own (``timeout_s`` for the attempt),
    ``resilience``'s.
    """
    config = route if isinstance(route, RouteConfig) else RouteConfig(targets=list(route))

    def entry(e: RouteEntry) -> RouteTarget:
        name = _name(e)
        spec = targets[name]
        per_target = resilience.targets.get(name)

        def first_set(field: str, own: float | None) -> float | None:
            # The route entry's, the route's, resilience.targets.<name>'s, the target's,
            # resilience's.
            candidates = (
                None if isinstance(e, str) else getattr(e, field),
                getattr(config, field),
                getattr(per_target, field) if per_target else None,
                own,
                getattr(resilience, field),
            )
            return next((t for t in candidates if t is not None), None)

        return RouteTarget(
            spec=spec,
            weight=1 if isinstance(e, str) else e.weight,
            attempt_timeout_s=first_set("attempt_timeout_s", spec.timeout_s),
            first_token_timeout_s=first_set("first_token_timeout_s", spec.first_token_timeout_s),
            idle_timeout_s=first_set("idle_timeout_s", spec.idle_timeout_s),
        )

    retry = _merged(resilience.retry, config.retry)
    hedge = config.hedge
    return RoutePolicy(
        targets=tuple(entry(e) for e in config.targets),
        strategy=Strategy(config.strategy),
        fallback=tuple(entry(e) for e in config.fallback),
        on_context_window_exceeded=tuple(entry(e) for e in config.on_context_window_exceeded),
        retry=RetryPolicy(
            max_attempts=retry.max_attempts,
            backoff_base_s=retry.backoff_base_s,
            backoff_max_s=retry.backoff_max_s,
            max_retry_after_s=retry.max_retry_after_s,
        ),
        hedge=(
            HedgePolicy(
                delay_s=None if hedge.delay_s == "p95" else float(hedge.delay_s),
                min_delay_s=hedge.min_delay_s,
                fallback_delay_s=hedge.fallback_delay_s,
                to=HedgeTo(hedge.to),
            )
            if hedge
            else None
        ),
        min_attempt_s=(
            config.min_attempt_s if config.min_attempt_s is not None else resilience.min_attempt_s
        ),
    )
