"""The pybreaker wrapper: what pybreaker does with coroutines and cancellation (pinned, since
the wrapper exists because of it), and how the wrapper admits, counts and recovers."""

from __future__ import annotations

import asyncio
import time

import pybreaker
import pytest

from service.errors import DeadlineExceeded, InvalidArgument, Unavailable
from service.routing.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerOpen
from service.routing.policy import BreakerPolicy


class Clock:
    """Wall time that a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def _fails() -> None:
    raise Unavailable("down")


# --- pybreaker 1.4.1 itself: the reasons for the wrapper --------------------------------


async def test_pybreaker_call_on_a_coroutine_counts_nothing() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=1)
    coroutine = cb.call(_fails)  # returns the coroutine unawaited: a "success"
    with pytest.raises(Unavailable):
        await coroutine
    assert cb.fail_counter == 0
    assert cb.current_state == CLOSED


async def test_pybreaker_counts_a_cancelled_await_inside_calling_as_a_failure() -> None:
    cb = pybreaker.CircuitBreaker(fail_max=5, throw_new_error_on_trip=False)

    async def attempt() -> None:
        with cb.calling():
            await asyncio.Event().wait()

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.fail_counter == 1


async def test_pybreaker_excluding_cancelled_error_counts_it_as_a_success() -> None:
    cb = pybreaker.CircuitBreaker(
        fail_max=5, exclude=[asyncio.CancelledError], throw_new_error_on_trip=False
    )
    with pytest.raises(Unavailable), cb.calling():
        raise Unavailable("down")
    assert cb.fail_counter == 1

    async def attempt() -> None:
        with cb.calling():
            await asyncio.Event().wait()

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cb.fail_counter == 0  # the failure streak was reset by a cancellation


# --- the wrapper -------------------------------------------------------------------------


def breaker(clock: Clock, **policy: float) -> Breaker:
    return Breaker("t", BreakerPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def test_abandoned_tickets_count_neither_way() -> None:
    b = breaker(Clock(), fail_max=3)
    b.admit().failed(Unavailable("down"))
    b.admit().failed(Unavailable("down"))
    b.admit().abandoned()  # a cancelled hedge loser, a caller gone
    assert b.fail_counter == 2
    assert b.state == CLOSED
    b.admit().failed(Unavailable("down"))
    assert b.state == OPEN


async def test_a_cancelled_attempt_through_the_wrapper_counts_nothing() -> None:
    b = breaker(Clock(), fail_max=3)
    b.admit().failed(Unavailable("down"))

    async def attempt() -> None:
        ticket = b.admit()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ticket.abandoned()
            raise
        ticket.succeeded()

    task = asyncio.create_task(attempt())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.fail_counter == 1  # neither incremented nor reset


def test_only_upstream_faults_count() -> None:
    b = breaker(Clock(), fail_max=1)
    b.admit().failed(InvalidArgument("bad request"))
    b.admit().failed(Unavailable("told not to count").overriding(counts_against_breaker=False))
    assert b.state == CLOSED
    b.admit().failed(DeadlineExceeded("timed out"))
    assert b.state == OPEN


def test_a_ticket_records_once() -> None:
    b = breaker(Clock(), fail_max=2)
    ticket = b.admit()
    ticket.failed(Unavailable("down"))
    ticket.failed(Unavailable("down"))
    ticket.succeeded()
    assert b.fail_counter == 1


def test_open_refuses_then_probes_after_the_cool_down_then_closes() -> None:
    clock = Clock()
    b = breaker(clock, fail_max=2, reset_timeout_s=30, half_open_probes=1)
    b.admit().failed(Unavailable("down"))
    b.admit().succeeded()  # a success resets the streak
    b.admit().failed(Unavailable("down"))
    assert b.state == CLOSED
    b.admit().failed(Unavailable("down"))
    assert b.state == OPEN

    with pytest.raises(BreakerOpen) as refused:
        b.admit()
    assert refused.value.retry_after_s is not None
    assert 25 < refused.value.retry_after_s <= 30
    assert refused.value.target == "t"

    clock.offset = 31
    probe = b.admit()
    assert b.state == HALF_OPEN
    with pytest.raises(BreakerOpen):
        b.admit()  # one probe at a time
    probe.succeeded()
    assert b.state == CLOSED
    b.admit().succeeded()


def test_a_failed_probe_opens_again() -> None:
    clock = Clock()
    b = breaker(clock, fail_max=1, reset_timeout_s=10)
    b.admit().failed(Unavailable("down"))
    clock.offset = 11
    b.admit().failed(Unavailable("still down"))
    assert b.state == OPEN
    with pytest.raises(BreakerOpen):
        b.admit()


def test_an_abandoned_probe_frees_its_slot() -> None:
    clock = Clock()
    b = breaker(clock, fail_max=1, reset_timeout_s=10)
    b.admit().failed(Unavailable("down"))
    clock.offset = 11
    b.admit().abandoned()
    assert b.state == HALF_OPEN
    b.admit().succeeded()
    assert b.state == CLOSED


def test_configure_keeps_state_and_applies_thresholds() -> None:
    seen: list[tuple[str, str]] = []
    b = Breaker("t", BreakerPolicy(fail_max=3), on_change=lambda t, s: seen.append((t, s)))
    b.admit().failed(Unavailable("down"))
    b.admit().failed(Unavailable("down"))
    b.configure(BreakerPolicy(fail_max=2))
    assert b.fail_counter == 2
    b.admit().failed(Unavailable("down"))
    assert b.state == OPEN
    assert seen == [("t", OPEN)]
