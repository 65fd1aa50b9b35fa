"""One attempt at one target, once it has begun: its events read within the attempt's deadline,
first-token and idle timeouts (one :class:`service.watchdog.Watchdog` per attempt), and its
outcome recorded in the target's breaker. The router (:mod:`service.routing.router`) decides
which attempts to make; this module reads and closes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import Any

from service.deadline import Deadline
from service.domain import Finish, ProviderEvent
from service.errors import DeadlineExceeded, SwitchboardError, Unavailable
from service.providers.base import ModelCall
from service.routing.breaker import Ticket
from service.routing.policy import RouteTarget
from service.routing.registry import TargetState
from service.routing.timeouts import first_token_timeout, idle_timeout
from service.watchdog import DEADLINE, FIRST_TOKEN, Expired, Watchdog, begin

log = logging.getLogger(__name__)

# Providers honour their deadline themselves (with their own, more precise, errors); the
# router's timeout is a backstop for one that does not, a little later.
GUARD_S = 0.25


@dataclass(slots=True)
class Attempt:
    target: RouteTarget
    state: TargetState
    ticket: Ticket
    events: AsyncGenerator[ProviderEvent, None]
    deadline: Deadline
    bounded_by_call: bool
    started: float
    watchdog: Watchdog
    call: ModelCall  # as sent to this target


def timed_out(attempt: Attempt, exc: Expired, what: str) -> SwitchboardError:
    name = attempt.target.name
    if exc.kind == DEADLINE:
        return DeadlineExceeded(_late(attempt, what))
    if exc.kind == FIRST_TOKEN:
        return first_token_timeout(name, exc.limit_s)
    return idle_timeout(name, exc.limit_s)


def _late(attempt: Attempt, what: str) -> str:
    name = attempt.target.name
    if attempt.bounded_by_call:
        return f"deadline exceeded before target {name!r} {what}"
    return (
        f"target {name!r} had not {what} within its attempt timeout "
        f"of {attempt.target.attempt_timeout_s:g}s"
    )


def blame(attempt: Attempt, error: SwitchboardError) -> None:
    """Record a failed attempt: a timeout the caller's own deadline imposed is not the
    target's fault."""
    if isinstance(error, DeadlineExceeded) and attempt.bounded_by_call:
        attempt.ticket.abandoned()
    else:
        attempt.ticket.failed(error)


class Committed(AsyncGenerator[ProviderEvent, None]):
    """The committed attempt's events. Unlike a bare async generator, closing it before
    its first step still closes the upstream request and releases the breaker ticket."""

    __slots__ = ("_attempt", "_events")

    def __init__(self, attempt: Attempt, first: ProviderEvent) -> None:
        self._attempt = attempt
        self._events = _committed(attempt, first)

    # The generator's own awaitables, not a coroutine around each (the mixin's __anext__
    # would add two per step, held for as long as a read waits).
    def __anext__(self) -> Awaitable[ProviderEvent]:  # type: ignore[override]
        return self._events.__anext__()

    def asend(self, value: None) -> Awaitable[ProviderEvent]:  # type: ignore[override]
        return self._events.asend(value)

    def athrow(self, *args: Any) -> Awaitable[ProviderEvent]:  # type: ignore[override]
        return self._events.athrow(*args)

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._attempt.ticket.abandoned()
            self._attempt.watchdog.close()
            await self._attempt.events.aclose()


async def _committed(attempt: Attempt, first: ProviderEvent) -> AsyncGenerator[ProviderEvent, None]:
    """The committed attempt's events, ``first`` included, within its deadline (the
    provider's own, the Provider contract; the router's watchdog backs it up) and its idle
    timeout.

    Ends after the ``Finish`` (a success for the breaker). A failure is raised as is (and
    counted); a stream that ends without ``Finish`` raises Unavailable. Closing it early
    counts nothing and closes the upstream request.
    """
    events = attempt.events
    name = attempt.target.name
    try:
        event = first
        while True:
            if isinstance(event, Finish):
                attempt.ticket.succeeded()
                await _run_out(attempt)
                yield event
                return
            yield event
            try:
                event = await attempt.watchdog.read(events)
            except StopAsyncIteration:
                raise Unavailable(
                    f"target {name!r} ended its answer without finishing it"
                ) from None
            except Expired as exc:
                raise timed_out(attempt, exc, "finished its answer") from None
    except SwitchboardError as exc:
        exc.about(target=name)
        blame(attempt, exc)
        raise
    finally:
        attempt.ticket.abandoned()
        attempt.watchdog.close()
        await events.aclose()


async def _run_out(attempt: Attempt) -> None:
    """Let the provider end after its Finish (it owes nothing more) instead of closing it
    mid-generator: it completes normally (its own accounting, whatever it reads after the
    last event). Bounded; the answer is complete, so whatever goes wrong is only logged."""
    try:
        extra, rest = begin(anext(attempt.events))
        if rest is not None:  # it waits (a provider that reads on): the bound applies
            async with asyncio.timeout(min(attempt.deadline.remaining(), 1.0) + GUARD_S):
                extra = await rest
    except StopAsyncIteration:
        return
    except (TimeoutError, SwitchboardError) as exc:
        log.info("provider did not end after its Finish", extra={"error": repr(exc)})
        return
    log.warning(
        "provider sent an event after its Finish; ignored",
        extra={"target": attempt.target.name, "event": type(extra).__name__},
    )
