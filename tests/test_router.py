"""The Router on its own, over mock providers: the edges of deadlines, breakers, budgets
and hedging that are awkward to reach through the server."""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import aclosing

import pytest

from service.deadline import Deadline
from service.domain import Finish, Message, Parameters, Role, TextDelta, TextPart
from service.errors import DeadlineExceeded, Unavailable
from service.providers.base import ModelCall, TargetSpec
from service.providers.mock import MockProvider
from service.routing.policy import (
    BreakerPolicy,
    BudgetPolicy,
    HedgePolicy,
    HedgeTo,
    ResilienceSpec,
    RetryPolicy,
    RoutePolicy,
    RouteTarget,
)
from service.routing.registry import TargetRegistry
from service.routing.router import Router

CALL = ModelCall(
    system_prompt="",
    messages=(Message(Role.USER, (TextPart("one two three"),)),),
    parameters=Parameters(),
)


def targets(**options: dict[str, object]) -> dict[str, MockProvider]:
    return {
        name: MockProvider(TargetSpec(name=name, provider="mock", model="echo", options=opts))
        for name, opts in options.items()
    }


def policy(providers: dict[str, MockProvider], **kw: object) -> RoutePolicy:
    route = tuple(RouteTarget(TargetSpec(name, "mock", "echo")) for name in providers)
    return RoutePolicy(targets=route, **kw)  # type: ignore[arg-type]


async def answer(router: Router, plan: RoutePolicy, deadline: Deadline) -> tuple[str, int, str]:
    opened = await router.open(plan.specs, CALL, deadline, plan)
    text = []
    async with aclosing(opened.events) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            assert not isinstance(event, Finish) or event.reason.value == "stop"
    return opened.target.name, opened.attempts, "".join(text)


async def test_a_deadline_already_past_makes_no_upstream_call() -> None:
    providers = targets(a={})
    router = Router(providers)
    with pytest.raises(DeadlineExceeded, match="an attempt needs at least"):
        await router.open((), CALL, Deadline(time.monotonic() - 1), policy(providers))
    assert providers["a"].stats.started == 0


async def test_a_spent_budget_stops_retries_and_fallbacks() -> None:
    providers = targets(a={"fail_rate": 1.0}, b={})
    registry = TargetRegistry(
        ResilienceSpec(
            default_budget=BudgetPolicy(ratio=0, burst=1, min_per_s=0),
            default_breaker=BreakerPolicy(fail_max=1000),
        )
    )
    router = Router(providers, registry)
    plan = policy(providers)
    assert (await answer(router, plan, Deadline.after(5)))[:2] == ("b", 2)  # the one token
    with pytest.raises(Unavailable, match="503"):
        await answer(router, plan, Deadline.after(5))
    assert providers["b"].stats.started == 1


async def test_half_open_lets_one_probe_through_while_others_fall_back() -> None:
    providers = targets(a={"ttft_s": 0.3}, b={})
    clock = [time.time()]
    registry = TargetRegistry(
        ResilienceSpec(default_breaker=BreakerPolicy(fail_max=1, reset_timeout_s=10)),
        clock=lambda: clock[0],
    )
    router = Router(providers, registry)
    registry.get("a").breaker.admit().failed(Unavailable("down"))
    clock[0] += 11
    plan = policy(providers)
    results = await asyncio.gather(*(answer(router, plan, Deadline.after(10)) for _ in range(8)))
    assert sorted(r[0] for r in results) == ["a"] + ["b"] * 7
    assert providers["a"].stats.started == 1
    assert registry.get("a").breaker.state == "closed"


async def test_a_hedge_to_the_same_target_takes_the_faster_of_two_tries() -> None:
    # Seeded draws: 3 of the 6 first tries land in the 30 s tail; their hedges do not.
    providers = targets(a={"seed": 1, "tail_rate": 0.3, "tail_ttft_s": 30, "ttft_s": 0.01})
    router = Router(providers)
    plan = policy(providers, hedge=HedgePolicy(delay_s=0.05, to=HedgeTo.SAME))
    results = [await answer(router, plan, Deadline.after(20)) for _ in range(6)]
    assert all(r == ("a", r[1], "one two three") for r in results)
    assert sorted(attempts for _, attempts, _ in results) == [1, 1, 1, 2, 2, 2]
    assert providers["a"].stats.cancelled == 3  # each slow first try was cancelled…
    assert providers["a"].stats.completed == 6  # …and each answer ran to its end
    assert providers["a"].stats.in_flight == 0


async def test_retries_on_the_same_target_back_off_with_jitter() -> None:
    providers = targets(a={"fail_first": 2})
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    router = Router(providers, rng=random.Random(1), sleep=sleep)
    plan = policy(providers, retry=RetryPolicy(max_attempts=3, backoff_base_s=0.2))
    assert (await answer(router, plan, Deadline.after(5)))[:2] == ("a", 3)
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.2
    assert 0 <= sleeps[1] <= 0.4
