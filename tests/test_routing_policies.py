"""The routing pieces on their own: config parsing and merging, the retry budget, retry
decisions, weighted order, the latency window, and state that survives a reload."""

from __future__ import annotations

import random
import re
import textwrap
from pathlib import Path

import pytest

from service.app import build_runtime
from service.config import Snapshot, load
from service.config.load import ConfigError
from service.errors import Unavailable
from service.providers.registry import build_provider
from service.routing.balance import attempt_order
from service.routing.breaker import OPEN
from service.routing.budget import RetryBudget
from service.routing.hedge import MIN_SAMPLES, LatencyWindow, hedge_delay_s
from service.routing.policy import (
    BreakerPolicy,
    BudgetPolicy,
    HedgePolicy,
    HedgeTo,
    RetryPolicy,
    Strategy,
)
from service.routing.registry import TargetRegistry
from service.routing.retry import MoveOn, Retry, backoff_s, decide


def load_text(tmp_path: Path, text: str) -> Snapshot:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return load(path, {})


BASE = """
targets:
  a: {provider: mock, model: echo, timeout_s: 9}
  b: {provider: mock, model: echo}
  c: {provider: mock, model: echo}
"""


def test_a_plain_list_route_is_ordered_fallback_with_global_defaults(tmp_path: Path) -> None:
    snap = load_text(tmp_path, BASE + "agents:\n  x: {route: [b, a]}\n")
    agent = snap.agents["x"]
    assert [t.name for t in agent.route] == ["b", "a"]
    policy = agent.routing
    assert policy.strategy is Strategy.FALLBACK
    assert policy.retry == RetryPolicy()
    assert policy.hedge is None
    assert [t.attempt_timeout_s for t in policy.targets] == [None, 9]


def test_a_mapping_route_merges_over_defaults_and_overrides_per_target(tmp_path: Path) -> None:
    snap = load_text(
        tmp_path,
        BASE
        + """
agents:
  x:
    route:
      strategy: weighted
      targets: [{target: a, weight: 3, attempt_timeout_s: 2}, {target: b}]
      fallback: [c]
      retry: {max_attempts: 4}
      hedge: {delay_s: p95, to: same}
      attempt_timeout_s: 5
resilience:
  retry: {backoff_base_s: 0.5}
  attempt_timeout_s: 30
  breaker: {fail_max: 7}
  targets:
    a: {breaker: {reset_timeout_s: 3}, budget: {ratio: 0.5}}
    c: {attempt_timeout_s: 1}
""",
    )
    policy = snap.agents["x"].routing
    assert policy.strategy is Strategy.WEIGHTED
    assert [(t.name, t.weight, t.attempt_timeout_s) for t in policy.targets] == [
        ("a", 3, 2),
        ("b", 1, 5),
    ]
    assert [(t.name, t.attempt_timeout_s) for t in policy.fallback] == [("c", 5)]
    assert policy.retry == RetryPolicy(max_attempts=4, backoff_base_s=0.5)
    assert RetryPolicy().max_attempts == 1  # a plain route only falls back
    assert policy.hedge == HedgePolicy(delay_s=None, to=HedgeTo.SAME)
    resilience = snap.resilience
    assert resilience.breaker("a") == BreakerPolicy(fail_max=7, reset_timeout_s=3)
    assert resilience.breaker("b") == BreakerPolicy(fail_max=7)
    assert resilience.budget("a") == BudgetPolicy(ratio=0.5)


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ("x: {route: [a, nope]}", "agents.x.route[1]: no target named 'nope'"),
        ("x: {route: {targets: [a, a]}}", "more than once on the route: a"),
        ("x: {route: {targets: [a], strategy: random}}", "strategy"),
        ("x: {route: {targets: [{target: a, weight: 0}]}}", "weight"),
        ("x: {route: {targets: []}}", "targets"),
        ("x: {route: {targets: [a], retry: {max_attempts: 0}}}", "max_attempts"),
        ("x: {route: {targets: [a], hedge: {delay_s: -1}}}", "delay_s"),
    ],
)
def test_bad_routes_are_rejected_naming_the_field(
    tmp_path: Path, agents: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_text(tmp_path, BASE + f"agents:\n  {agents}\n")


def test_resilience_overrides_must_name_a_target(tmp_path: Path) -> None:
    text = BASE + "agents:\n  x: {route: [a]}\nresilience: {targets: {zz: {}}}\n"
    with pytest.raises(ConfigError, match=r"resilience\.targets\.zz"):
        load_text(tmp_path, text)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_allows_ratio_of_calls_plus_the_burst() -> None:
    clock = Clock()
    budget = RetryBudget(BudgetPolicy(ratio=0.2, burst=3, min_per_s=0), clock=clock)
    extra = 0
    for _ in range(1000):
        budget.deposit()
        extra += budget.try_withdraw()
    assert 200 <= extra <= 203


def test_the_budget_refills_over_time_up_to_its_burst() -> None:
    clock = Clock()
    budget = RetryBudget(BudgetPolicy(ratio=0, burst=2, min_per_s=1), clock=clock)
    assert budget.try_withdraw()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.now += 0.5
    assert not budget.try_withdraw()
    clock.now += 0.6
    assert budget.try_withdraw()
    clock.now += 100
    assert budget.tokens == 2


def test_backoff_is_full_jitter_under_a_growing_cap() -> None:
    policy = RetryPolicy(backoff_base_s=0.1, backoff_max_s=1.0)
    rng = random.Random(3)
    for retry, cap in ((0, 0.1), (1, 0.2), (2, 0.4), (5, 1.0)):
        delays = [backoff_s(policy, retry, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8


def test_retry_after_is_honoured_only_when_it_fits() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_after_s=5)
    rng = random.Random(1)

    def decision(after: float | None, left: float, tries: int = 1) -> Retry | MoveOn:
        error = Unavailable("429/503", retry_after_s=after)
        return decide(
            error,
            policy=policy,
            attempts_on_target=tries,
            time_left_s=left,
            min_attempt_s=0.1,
            rng=rng,
        )

    assert decision(1.0, left=10) == Retry(1.0)
    assert isinstance(decision(6.0, left=100), MoveOn)  # over the cap
    assert isinstance(decision(1.0, left=1.05), MoveOn)  # no time for the attempt after it
    assert isinstance(decision(None, left=10, tries=3), MoveOn)  # attempts used up
    assert isinstance(decision(None, left=10), Retry)


def test_weighted_order_follows_the_weights_then_the_fallback(tmp_path: Path) -> None:
    snap = load_text(
        tmp_path,
        BASE
        + """
agents:
  x:
    route:
      strategy: weighted
      targets: [{target: a, weight: 9}, {target: b, weight: 1}]
      fallback: [c]
""",
    )
    policy = snap.agents["x"].routing
    rng = random.Random(5)
    orders = [[t.name for t in attempt_order(policy, rng)] for _ in range(1000)]
    assert all(o[2] == "c" and sorted(o[:2]) == ["a", "b"] for o in orders)
    first_a = sum(o[0] == "a" for o in orders) / 1000
    assert 0.85 < first_a < 0.95


def test_the_hedge_delay_is_fixed_or_the_observed_p95() -> None:
    window = LatencyWindow()
    p95 = HedgePolicy(delay_s=None, min_delay_s=0.01, fallback_delay_s=0.7)
    assert hedge_delay_s(HedgePolicy(delay_s=0.3), window) == 0.3
    assert hedge_delay_s(p95, window) == 0.7  # too few samples yet
    for i in range(100):
        window.add(1.0 if i % 10 == 0 else 0.1)  # a 10% tail
    assert len(window) >= MIN_SAMPLES
    assert hedge_delay_s(p95, window) == 1.0
    for _ in range(256):
        window.add(0.2)
    assert hedge_delay_s(p95, window) == pytest.approx(0.2)


def test_breakers_and_budgets_survive_a_reload(tmp_path: Path) -> None:
    first = load_text(tmp_path, BASE + "agents:\n  x: {route: [a]}\n")
    registry = TargetRegistry(first.resilience)
    providers = {n: build_provider(t) for n, t in first.targets.items()}
    build_runtime(first, providers, registry)
    breaker = registry.get("a").breaker
    for _ in range(5):
        breaker.admit().failed(Unavailable("down"))
    assert breaker.state == OPEN

    second = load_text(
        tmp_path, BASE + "agents:\n  x: {route: [a]}\nresilience: {breaker: {fail_max: 2}}\n"
    )
    runtime = build_runtime(second, providers, registry)
    assert runtime.snapshot is second
    assert registry.get("a").breaker is breaker
    assert breaker.state == OPEN
    assert breaker.policy.fail_max == 2
