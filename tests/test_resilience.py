"""Chaos scenarios through the real server: what a caller sees when upstreams misbehave.

The targets are mock providers with fault switches (config ``mock:``, or flipped at run
time through ``MockProvider.faults``); counts come from ``MockStats``. Each scenario also
checks that no task is left running behind it.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
)

from service.deadline import Deadline
from service.domain import AgentRequest, Message, Role, Start, TextPart
from service.errors import Unavailable
from service.routing.breaker import CLOSED, OPEN
from tests.chaos import mock, no_tasks_left, wait_for, wait_for_health
from tests.harness import serve_config

pytestmark = pytest.mark.asyncio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

TARGETS = """
targets:
  a: {provider: mock, model: echo, mock: {seed: 1}}
  b: {provider: mock, model: echo, mock: {seed: 2}}
"""


def config(agent: str, targets: str = TARGETS, resilience: str = "") -> str:
    return f"{targets}\nagents:\n  bot:\n{agent}\n{resilience}"


async def test_a_target_down_falls_back_opens_its_breaker_and_recovers() -> None:
    yaml = config(
        "    route: {targets: [a, b], retry: {max_attempts: 1}}",
        resilience="resilience: {breaker: {fail_max: 3, reset_timeout_s: 0.3}}",
    )
    async with serve_config(yaml) as s:
        a, b = mock(s, "a"), mock(s, "b")
        before = asyncio.all_tasks()
        a.faults.fail_rate = 1.0
        await wait_for_health(s.channel, "switchboard.target.a", SERVING)

        for _ in range(3):
            answer = await s.client.invoke("bot", "hello")
            assert answer.message.content[0].text == "hello"
            assert (answer.target.name, answer.attempts) == ("b", 2)
        assert s.app.targets.breaker_states()["a"] == OPEN
        await wait_for_health(s.channel, "switchboard.target.a", NOT_SERVING)

        # Open: the failing target is skipped without an upstream call.
        started = a.stats.started
        answer = await s.client.invoke("bot", "skip it")
        assert (answer.target.name, answer.attempts) == ("b", 1)
        assert a.stats.started == started

        # The target heals; after the cool-down a probe goes through and closes it.
        a.faults.fail_rate = 0.0
        await wait_for(lambda: s.app.targets.get("a").breaker.cooldown_left() == 0, "cool-down")
        answer = await s.client.invoke("bot", "probe")
        assert (answer.target.name, answer.attempts) == ("a", 1)
        assert s.app.targets.breaker_states()["a"] == CLOSED
        await wait_for_health(s.channel, "switchboard.target.a", SERVING)
        assert b.stats.failed == 0
        await no_tasks_left(before)


async def test_every_breaker_open_fails_fast_with_retry_info() -> None:
    yaml = config(
        "    route: {targets: [a, b], retry: {max_attempts: 1}}",
        resilience="resilience: {breaker: {fail_max: 1, reset_timeout_s: 60}}",
    )
    async with serve_config(yaml) as s:
        mock(s, "a").faults.fail_rate = 1.0
        mock(s, "b").faults.fail_rate = 1.0
        with pytest.raises(UnavailableError):
            await s.client.invoke("bot", "hello")
        started = mock(s, "a").stats.started + mock(s, "b").stats.started
        with pytest.raises(UnavailableError) as failed:
            await s.client.invoke("bot", "hello")
        assert "circuit open" in failed.value.message
        assert failed.value.retry_after_s is not None
        assert 50 < failed.value.retry_after_s <= 60
        assert mock(s, "a").stats.started + mock(s, "b").stats.started == started


async def test_a_429_storm_is_ridden_out_with_retry_after() -> None:
    yaml = config(
        "    route: {targets: [a], retry: {max_attempts: 3, max_retry_after_s: 1}}",
        targets="""
targets:
  a:
    provider: mock
    model: echo
    mock: {fail_first: 2, error: rate_limited, retry_after_s: 0.05}
""",
    )
    async with serve_config(yaml) as s:
        t0 = time.monotonic()
        answer = await s.client.invoke("bot", "patience")
        assert answer.message.content[0].text == "patience"
        assert answer.attempts == 3
        assert time.monotonic() - t0 >= 0.1  # waited the two retry-afters
        assert s.app.targets.breaker_states()["a"] == CLOSED


async def test_a_retry_after_beyond_the_deadline_fails_at_once_with_retry_info() -> None:
    yaml = config(
        "    route: {targets: [a], retry: {max_attempts: 3, max_retry_after_s: 30}}",
        targets="""
targets:
  a:
    provider: mock
    model: echo
    mock: {fail_rate: 1, error: rate_limited, retry_after_s: 5}
""",
    )
    async with serve_config(yaml) as s:
        t0 = time.monotonic()
        with pytest.raises(UnavailableError) as failed:
            await s.client.invoke("bot", "hello", timeout=2)
        assert time.monotonic() - t0 < 1.5
        assert failed.value.retry_after_s == pytest.approx(5)
        assert "rate limiting" in failed.value.message
        assert mock(s, "a").stats.started == 1


async def test_529_overloads_are_absorbed_by_retries_and_fallback() -> None:
    yaml = config(
        "    route: {targets: [a, b], retry: {max_attempts: 3, backoff_base_s: 0.01}}",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {seed: 11, fail_rate: 0.3, error: overloaded}}
  b: {provider: mock, model: echo, mock: {seed: 12, fail_rate: 0.3, error: overloaded}}
""",
        resilience="resilience: {breaker: {fail_max: 1000}, budget: {burst: 100}}",
    )
    async with serve_config(yaml) as s:
        answers = [await s.client.invoke("bot", f"call {i}") for i in range(40)]
        assert all(a.message.content[0].text == f"call {i}" for i, a in enumerate(answers))
        assert max(a.attempts for a in answers) > 1
        failed = mock(s, "a").stats.failed + mock(s, "b").stats.failed
        assert sum(a.attempts for a in answers) == 40 + failed


async def test_a_hanging_target_is_timed_out_and_the_fallback_answers() -> None:
    yaml = config(
        "    route: {targets: [{target: a, attempt_timeout_s: 0.3}, b]}",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {hang: true}}
  b: {provider: mock, model: echo}
""",
    )
    async with serve_config(yaml) as s:
        before = asyncio.all_tasks()
        t0 = time.monotonic()
        answer = await s.client.invoke("bot", "anyone?", timeout=10)
        assert answer.target.name == "b"
        assert 0.3 <= time.monotonic() - t0 < 5
        assert mock(s, "a").stats.in_flight == 0
        await no_tasks_left(before)


async def test_a_hanging_target_respects_the_caller_deadline_and_leaves_nothing() -> None:
    yaml = config(
        "    route: [a]",
        targets="targets:\n  a: {provider: mock, model: echo, mock: {hang: true}}\n",
    )
    async with serve_config(yaml) as s:
        before = asyncio.all_tasks()
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await s.client.invoke("bot", "anyone?", timeout=0.5)
        assert time.monotonic() - t0 < 0.5 + 1.0
        await wait_for(lambda: mock(s, "a").stats.in_flight == 0, "the attempt to end")
        assert mock(s, "a").stats.started == 1
        await no_tasks_left(before)
        # A deadline imposed by the caller is not the target's fault.
        assert s.app.targets.get("a").breaker.fail_counter == 0


async def test_no_upstream_call_without_time_for_an_attempt() -> None:
    yaml = config(
        "    route: {targets: [a], min_attempt_s: 1.0}",
    )
    async with serve_config(yaml) as s:
        with pytest.raises(DeadlineExceededError) as failed:
            await s.client.invoke("bot", "too late", timeout=0.5)
        assert "deadline" in failed.value.message
        assert mock(s, "a").stats.started == 0


async def test_a_stream_dropped_before_its_first_token_falls_back() -> None:
    yaml = config(
        "    route: [a, b]",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {drop_after_tokens: 0}}
  b: {provider: mock, model: echo}
""",
    )
    async with serve_config(yaml) as s:
        events = [e async for e in s.client.stream("bot", "one two three")]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds == ["start", "text_delta", "text_delta", "text_delta", "usage", "finish"]
        assert events[0].start.target.name == "b"
        assert events[-1].finish.target.name == "b"
        assert events[-1].finish.attempts >= 2


async def test_a_stream_dropped_after_its_first_token_ends_unavailable_without_repeats() -> None:
    yaml = config(
        "    route: [a, b]",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {drop_after_tokens: 2}}
  b: {provider: mock, model: echo}
""",
    )
    async with serve_config(yaml) as s:
        before = asyncio.all_tasks()
        events: list[pb.StreamResponse] = []

        async def read() -> None:
            async for event in s.client.stream("bot", "one two three four"):
                events.append(event)  # noqa: PERF401 (keeps what came before the error)

        with pytest.raises(UnavailableError) as failed:
            await read()
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds == ["start", "text_delta", "text_delta"]
        assert [e.text_delta.text for e in events[1:]] == ["one ", "two "]
        assert "dropped" in failed.value.message
        assert mock(s, "b").stats.started == 0  # committed: no fallback after a token
        await no_tasks_left(before)


async def test_an_exhausted_quota_falls_back_at_once_without_retrying() -> None:
    yaml = config(
        "    route: {targets: [a, b], retry: {max_attempts: 3}}",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {fail_rate: 1, error: resource_exhausted}}
  b: {provider: mock, model: echo}
""",
    )
    async with serve_config(yaml) as s:
        answer = await s.client.invoke("bot", "hello")
        assert (answer.target.name, answer.attempts) == ("b", 2)
        assert mock(s, "a").stats.started == 1
        # With nowhere to fall back, the caller sees the quota error.
        mock(s, "b").faults.fail_rate = 1.0
        mock(s, "b").faults.error = "resource_exhausted"
        with pytest.raises(ResourceExhaustedError) as failed:
            await s.client.invoke("bot", "hello")
        assert "quota" in failed.value.message


async def test_caller_errors_are_not_retried_elsewhere() -> None:
    yaml = config(
        "    route: [a, b]",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {fail_rate: 1, error: invalid_argument}}
  b: {provider: mock, model: echo}
""",
    )
    async with serve_config(yaml) as s:
        with pytest.raises(InvalidArgumentError):
            await s.client.invoke("bot", "hello")
        assert mock(s, "a").stats.started == 1
        assert mock(s, "b").stats.started == 0


HEDGED = """
targets:
  slow: {provider: mock, model: echo, mock: {ttft_s: 30}}
  fast: {provider: mock, model: echo, mock: {ttft_s: 0.05}}
"""


async def test_hedging_picks_the_fast_target_and_cancels_the_loser() -> None:
    yaml = config(
        "    route: {targets: [slow, fast], hedge: {delay_s: 0.1, to: next}}",
        targets=HEDGED,
        resilience="resilience: {breaker: {fail_max: 3}}",
    )
    async with serve_config(yaml) as s:
        slow = mock(s, "slow")
        breaker = s.app.targets.get("slow").breaker
        # Two failures on record: a cancelled loser must neither add to nor reset them.
        breaker.admit().failed(_down())
        breaker.admit().failed(_down())
        before = asyncio.all_tasks()
        t0 = time.monotonic()
        answer = await s.client.invoke("bot", "quick", timeout=20)
        assert time.monotonic() - t0 < 10
        assert (answer.target.name, answer.attempts) == ("fast", 2)
        await wait_for(lambda: slow.stats.in_flight == 0, "the loser to be cancelled")
        assert slow.stats.cancelled == 1
        assert breaker.fail_counter == 2
        await no_tasks_left(before)


async def test_cancelling_the_caller_cancels_every_attempt() -> None:
    yaml = config(
        "    route: {targets: [a, b], hedge: {delay_s: 0.05, to: next}}",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {hang: true}}
  b: {provider: mock, model: echo, mock: {hang: true}}
""",
    )
    async with serve_config(yaml) as s:
        a, b = mock(s, "a"), mock(s, "b")
        before = asyncio.all_tasks()
        call = asyncio.create_task(s.client.invoke("bot", "never mind", timeout=30))
        await wait_for(lambda: a.stats.in_flight == 1 and b.stats.in_flight == 1, "hedge")
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await wait_for(lambda: a.stats.in_flight + b.stats.in_flight == 0, "attempts to end")
        assert (a.stats.cancelled, b.stats.cancelled) == (1, 1)
        await no_tasks_left(before)
        assert s.app.targets.get("a").breaker.fail_counter == 0


async def test_the_retry_budget_bounds_attempts_during_a_full_outage_under_load() -> None:
    yaml = config(
        "    route: {targets: [a, b], retry: {max_attempts: 3, backoff_base_s: 0.001}}",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {fail_rate: 1}}
  b: {provider: mock, model: echo, mock: {fail_rate: 1}}
""",
        # Breakers out of the way: the budget alone must hold the line.
        resilience="""
resilience:
  breaker: {fail_max: 100000}
  budget: {ratio: 0.2, burst: 2, min_per_s: 0}
""",
    )
    calls = 300
    async with serve_config(yaml) as s:
        gate = asyncio.Semaphore(30)

        async def one() -> bool:
            async with gate:
                try:
                    await s.client.invoke("bot", "hello", timeout=30)
                except UnavailableError:
                    return False
                return True

        results = await asyncio.gather(*(one() for _ in range(calls)))
        assert not any(results)
        attempts = mock(s, "a").stats.started + mock(s, "b").stats.started
        # Without a budget: 6 attempts per call. With it: 1 + ratio, plus the bursts.
        assert attempts <= calls * 1.2 + 2 * 2 + 2
        assert attempts >= calls


async def test_weighted_routing_spreads_calls_by_weight() -> None:
    yaml = config(
        """    route:
      strategy: weighted
      targets: [{target: a, weight: 3}, {target: b, weight: 1}]""",
    )
    async with serve_config(yaml) as s:
        for _ in range(200):
            await s.client.invoke("bot", "hi")
        share = mock(s, "a").stats.started / 200
        assert 0.6 < share < 0.9


async def test_breaker_state_shows_in_health_per_target() -> None:
    yaml = config("    route: [a, b]")
    async with serve_config(yaml) as s:
        for name in ("a", "b"):
            await wait_for_health(s.channel, f"switchboard.target.{name}", SERVING)
        breaker = s.app.targets.get("b").breaker
        for _ in range(breaker.policy.fail_max):
            breaker.admit().failed(_down())
        await wait_for_health(s.channel, "switchboard.target.b", NOT_SERVING)
        await wait_for_health(s.channel, "switchboard.target.a", SERVING)
        gauge = "switchboard_target_breaker_state"
        sample = s.app.metrics.registry.get_sample_value
        assert (sample(gauge, {"target": "a"}), sample(gauge, {"target": "b"})) == (0, 2)


def _down() -> Unavailable:
    return Unavailable("down")


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE])
async def test_status_of_a_route_exhausted(code: grpc.StatusCode) -> None:
    yaml = config(
        "    route: {targets: [a, b], retry: {max_attempts: 1}}",
        targets="""
targets:
  a: {provider: mock, model: echo, mock: {fail_rate: 1}}
  b: {provider: mock, model: echo, mock: {fail_rate: 1, error: overloaded}}
""",
    )
    async with serve_config(yaml) as s:
        with pytest.raises(UnavailableError) as failed:
            await s.client.invoke("bot", "hello")
        assert failed.value.code == code
        assert "529" in failed.value.message  # the last target's error


async def test_a_caller_leaving_mid_stream_closes_the_upstream_and_frees_the_breaker() -> None:
    yaml = config(
        "    route: [a]",
        targets="targets:\n  a: {provider: mock, model: echo, mock: {tokens_per_s: 2}}\n",
        resilience="resilience: {breaker: {fail_max: 1, reset_timeout_s: 0.05}}",
    )
    async with serve_config(yaml) as s:
        a = mock(s, "a")
        breaker = s.app.targets.get("a").breaker
        breaker.admit().failed(_down())  # open; the next call after the cool-down probes
        await wait_for(lambda: breaker.cooldown_left() == 0, "cool-down")
        before = asyncio.all_tasks()
        for leave_after in ("start", "text_delta"):
            async for event in s.client.stream("bot", "one two three four five"):
                if event.WhichOneof("event") == leave_after:
                    break
            await wait_for(lambda: a.stats.in_flight == 0, "the upstream call to close")
        assert a.stats.cancelled == 2
        # Each probe that was abandoned freed its slot: a third call is admitted.
        answer = await s.client.invoke("bot", "still there?")
        assert answer.target.name == "a"
        assert breaker.state == CLOSED
        await no_tasks_left(before)


async def test_closing_the_answer_right_after_its_start_closes_the_upstream() -> None:
    """The runner owns the committed answer from the moment it has one: a caller that goes
    away after Start leaves no open upstream call and no breaker probe slot taken."""
    yaml = config(
        "    route: [a]",
        targets="targets:\n  a: {provider: mock, model: echo, mock: {tokens_per_s: 2}}\n",
        resilience="resilience: {breaker: {fail_max: 1, reset_timeout_s: 0.05}}",
    )
    async with serve_config(yaml) as s:
        a = mock(s, "a")
        breaker = s.app.targets.get("a").breaker
        breaker.admit().failed(_down())
        await wait_for(lambda: breaker.cooldown_left() == 0, "cool-down")
        request = AgentRequest(
            agent="bot",
            messages=(Message(Role.USER, (TextPart("one two three"),)),),
            request_id="r",
        )
        answer = s.app.runner.stream(request, Deadline.after(10))
        assert isinstance(await anext(answer), Start)
        assert a.stats.in_flight == 1
        await answer.aclose()
        assert a.stats.in_flight == 0
        assert a.stats.cancelled == 1
        breaker.admit().succeeded()  # the probe slot was given back
        assert breaker.state == CLOSED
