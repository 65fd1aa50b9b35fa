"""Routing and resilience policies as the router sees them: frozen, resolved once at load.

Config models live in :mod:`service.routing.config`; these are the domain objects built from
them. Every field is already resolved (agent over target over global defaults), so the hot
path never merges settings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.providers.base import TargetSpec


class Strategy(enum.Enum):
    """How a route picks its first target: in order, or by weight (fallback behind it)."""

    FALLBACK = "fallback"
    WEIGHTED = "weighted"


class HedgeTo(enum.Enum):
    """Where a hedged attempt goes: the same target again, or the next one on the route."""

    SAME = "same"
    NEXT = "next"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one target: exponential backoff with full jitter, retryable errors only.

    ``max_attempts`` counts the first attempt on a target (default 1: no retry on the same
    target, fallback only, as a plain ``route: [a, b]`` always did); fallback to the next
    target starts afresh. A ``retry_after_s`` longer than ``max_retry_after_s`` (or than the time
    left) is not waited for: the router falls back, or fails at once carrying it.
    """

    max_attempts: int = 1
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0
    max_retry_after_s: float = 10.0


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """Start a second attempt when the first has not begun answering after a delay.

    ``delay_s`` None means the target's observed p95 time to first event (at least
    ``min_delay_s``; ``fallback_delay_s`` until enough samples are seen).
    """

    delay_s: float | None = None
    min_delay_s: float = 0.02
    fallback_delay_s: float = 1.0
    to: HedgeTo = HedgeTo.NEXT


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """A target's circuit breaker: opens after ``fail_max`` consecutive failures, lets
    ``half_open_probes`` calls through after ``reset_timeout_s``, closes after
    ``success_threshold`` successful probes."""

    fail_max: int = 5
    reset_timeout_s: float = 30.0
    success_threshold: int = 1
    half_open_probes: int = 1


@dataclass(frozen=True, slots=True)
class BudgetPolicy:
    """A target's retry budget (Finagle/Envoy style token bucket).

    Each call whose first attempt goes to the target deposits ``ratio`` tokens; each extra
    attempt that the target's failure or slowness causes (retry, fallback, hedge) takes one.
    The bucket holds at most ``burst`` tokens and refills ``min_per_s`` tokens per second, so
    extra attempts stay below ``ratio`` of calls plus a small constant.
    """

    ratio: float = 0.2
    burst: float = 10.0
    min_per_s: float = 1.0


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """One target on an agent's route, with its weight and its resolved timeouts: the whole
    attempt, the time to its first event, and the silence allowed between two events
    (None: no such limit)."""

    spec: TargetSpec
    weight: int = 1
    attempt_timeout_s: float | None = None
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def streamed_timing(self) -> bool:
        """Whether a limit here is measured between events (first token, idle): such an
        attempt must stream, even for a caller that takes the answer whole."""
        return self.first_token_timeout_s is not None or self.idle_timeout_s is not None


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How one agent's calls are routed. ``targets`` are ordered (fallback) or weighted;
    ``fallback`` targets come after them, in order. ``on_context_window_exceeded`` are tried,
    in order, instead of the rest when a target says the request does not fit its context
    window (LiteLLM's ``context_window_fallbacks``); empty: that error ends the call."""

    targets: tuple[RouteTarget, ...]
    strategy: Strategy = Strategy.FALLBACK
    fallback: tuple[RouteTarget, ...] = ()
    on_context_window_exceeded: tuple[RouteTarget, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    hedge: HedgePolicy | None = None
    min_attempt_s: float = 0.05

    @classmethod
    def ordered(cls, route: tuple[TargetSpec, ...]) -> RoutePolicy:
        """Plain ordered fallback over ``route`` with default policies."""
        return cls(
            targets=tuple(
                RouteTarget(
                    t,
                    attempt_timeout_s=t.timeout_s,
                    first_token_timeout_s=t.first_token_timeout_s,
                    idle_timeout_s=t.idle_timeout_s,
                )
                for t in route
            )
        )

    @property
    def specs(self) -> tuple[TargetSpec, ...]:
        """Every target on the route, in configured order."""
        every = (*self.targets, *self.fallback, *self.on_context_window_exceeded)
        return tuple(t.spec for t in every)


@dataclass(frozen=True, slots=True)
class RedisStorageSpec:
    """Where breaker state is shared between replicas."""

    url: str
    namespace: str = "switchboard"


@dataclass(frozen=True, slots=True)
class ResilienceSpec:
    """Per-target breaker and budget settings, kept by the long-lived target registry."""

    breakers: Mapping[str, BreakerPolicy] = field(default_factory=dict)
    budgets: Mapping[str, BudgetPolicy] = field(default_factory=dict)
    default_breaker: BreakerPolicy = BreakerPolicy()
    default_budget: BudgetPolicy = BudgetPolicy()
    redis: RedisStorageSpec | None = None

    def breaker(self, target: str) -> BreakerPolicy:
        return self.breakers.get(target, self.default_breaker)

    def budget(self, target: str) -> BudgetPolicy:
        return self.budgets.get(target, self.default_budget)
