"""Chooses a target for a call and opens its answer, with the resilience policies around it.

A streamed call commits to a target when the target yields its first event; a whole call
(``Invoke``: its caller sees nothing until the end) commits only at the ``Finish``
(:mod:`service.routing.whole`). Until then, per the agent's :class:`RoutePolicy`: a
retryable failure is retried on the same target (backoff with jitter, or the upstream's
retry-after), then falls back to the next target; an upstream fault that is not retryable
(an exhausted quota, refused credentials) falls back at once; a caller error ends the call;
targets whose circuit is open are skipped; a slow first attempt may be hedged. After the
commit a failure ends the call: no event is ever repeated or lost.

Every attempt gets a deadline from what is left of the call's (capped by the target's
attempt timeout), and may have a first-token and an idle timeout
(:mod:`service.routing.timeouts`), all kept by one watchdog per attempt
(:class:`service.watchdog.Watchdog`; their timers share one loop timer, the router's
:class:`~service.watchdog.Alarms`). No attempt starts with less than ``min_attempt_s``
left, so a call whose deadline has passed makes no upstream call. Extra attempts (retries,
fallbacks, hedges) are paid from the retry budget of the target that caused them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.deadline import Deadline
from service.domain import ProviderEvent, UsageEvent
from service.errors import (
    DeadlineExceeded,
    Reason,
    ResourceExhausted,
    SwitchboardError,
    Unavailable,
)
from service.providers.base import ModelCall, Provider, TargetSpec
from service.routing import whole
from service.routing.attempt import GUARD_S, Attempt, Committed, blame, timed_out
from service.routing.balance import attempt_order
from service.routing.breaker import BreakerOpen, Ticket
from service.routing.hedge import hedge_delay_s, race
from service.routing.policy import HedgeTo, RoutePolicy, RouteTarget
from service.routing.registry import TargetRegistry, TargetState
from service.routing.retry import Retry, decide
from service.routing.tab import Tab
from service.watchdog import Alarms, Expired, Watchdog

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Opened:
    """An answer that has begun: its target, the attempts it took, and its events.

    ``events`` starts with the first event already received. The owner must close it
    (``aclose``), which closes the upstream request if it is still open.
    """

    target: TargetSpec
    attempts: int
    events: AsyncGenerator[ProviderEvent, None]


@dataclass(slots=True)
class _Outcome:
    attempt: Attempt
    first: ProviderEvent | None = None
    error: SwitchboardError | None = None


@dataclass(slots=True)
class _Call:
    """What one call has done so far."""

    policy: RoutePolicy
    deadline: Deadline
    tab: Tab
    attempts: int = 0
    last_error: SwitchboardError | None = None
    cause: TargetState | None = None
    skipped: list[BreakerOpen] = field(default_factory=list)
    stop: bool = False
    whole_answer: bool = False
    wider: tuple[RouteTarget, ...] | None = None  # switch to these (context window exceeded)
    widened: bool = False


class Router:
    """Routes calls over the providers built for one config snapshot.

    ``registry`` holds the per-target breakers, budgets and latencies; it outlives the
    Router (a reload builds a new Router over the same registry).
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        registry: TargetRegistry | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._providers = providers
        self._registry = registry or TargetRegistry()
        self._rng = rng or random.Random()  # noqa: S311 (jitter and balancing, not secrets)
        self._sleep = sleep
        self._alarms = Alarms()  # one loop timer for the limits of all its attempts

    async def open(
        self,
        route: tuple[TargetSpec, ...],
        call: ModelCall,
        deadline: Deadline,
        policy: RoutePolicy | None = None,
        *,
        whole_answer: bool = False,
        tab: Tab | None = None,
    ) -> Opened:
        """Open the call on the first target of the route that starts answering, or with
        ``whole_answer``, that answers to the end (the events are then already read; a
        failure after the first event is retried or falls back like one before it).

        ``policy`` (default: plain ordered fallback over ``route``) says how. Attempts that
        began answering and were given up (or cut short by the caller's cancellation) are
        written into ``tab`` with what they cost, whatever this returns or raises.

        Raises:
            SwitchboardError: the first caller error (neither retryable nor the upstream's
                fault: never retried elsewhere), or the last attempt's error when the route,
                the retry budget or the time is exhausted (its retry-after is kept, for
                RetryInfo).
            Unavailable: every target's circuit is open (``retry_after_s``: the shortest
                cool-down left); no upstream call was made.
            DeadlineExceeded: less than ``min_attempt_s`` was left before the first attempt;
                no upstream call was made.
        Cancelling the caller cancels (and closes) every attempt in flight.
        """
        policy = policy or RoutePolicy.ordered(route)
        state = _Call(policy, deadline, Tab() if tab is None else tab, whole_answer=whole_answer)
        order = attempt_order(policy, self._rng)
        index = 0
        while index < len(order):
            opened = await self._on_target(state, order[index], order[index + 1 :], call)
            if opened is not None:
                return opened
            if state.stop:
                break
            index += 1
            if state.wider is not None:  # the rest of the route has windows as small
                order, index, state.wider = list(state.wider), 0, None
        raise self._failure(state)

    async def _on_target(
        self, call: _Call, target: RouteTarget, rest: list[RouteTarget], model_call: ModelCall
    ) -> Opened | None:
        """Attempts on one target until it answers (Opened), fails for good (None), or the
        call must stop (None with ``call.stop``). Raises non-retryable errors."""
        policy = call.policy
        tries = 0
        while True:
            if call.deadline.remaining() < policy.min_attempt_s:
                call.stop = True
                return None
            target_state = self._registry.get(target.name)
            try:
                ticket = target_state.breaker.admit()
            except BreakerOpen as exc:
                log.info("target skipped", extra={"target": target.name, "error": exc.message})
                call.skipped.append(exc)
                return None
            if not self._pay(call, target_state):
                ticket.abandoned()
                call.stop = True
                return None
            if call.attempts and not await call.tab.allows(target.spec):
                # The call's budget (or tokens per minute) has no room for what one more
                # attempt can cost: it ends with the last attempt's error.
                log.warning("no budget left for another attempt", extra={"target": target.name})
                ticket.abandoned()
                call.stop = True
                return None
            tries += 1
            outcome = await self._attempt(
                call, target=target, state=target_state, ticket=ticket, rest=rest, mc=model_call
            )
            if outcome.first is not None:
                opened = self._opened(call, outcome)
                if not call.whole_answer:
                    return opened
                error = await self._whole(call, opened, model_call)
                if error is None:
                    return opened
            else:
                error = outcome.error
            assert error is not None
            log.warning(
                "attempt failed",
                extra={
                    "target": outcome.attempt.target.name,
                    "attempt": call.attempts,
                    "error": error.message,
                    "retryable": error.retryable,
                },
            )
            if error.reason == Reason.CONTEXT_WINDOW_EXCEEDED and self._widen(call):
                call.last_error = error
                return None
            if not (error.retryable or error.counts_against_breaker):
                # The caller's fault: no other target would do better.
                raise error
            call.last_error = error
            call.cause = outcome.attempt.state
            if not error.retryable:
                return None  # this target cannot serve it (quota, credentials): fall back
            decision = decide(
                error,
                policy=policy.retry,
                attempts_on_target=tries,
                time_left_s=call.deadline.remaining(),
                min_attempt_s=policy.min_attempt_s,
                rng=self._rng,
            )
            if not isinstance(decision, Retry):
                log.info("moving on", extra={"target": target.name, "reason": decision.why})
                return None
            await self._sleep(decision.delay_s)

    @staticmethod
    def _widen(call: _Call) -> bool:
        """Switch the call to its route's ``on_context_window_exceeded`` targets, once.
        False: there are none (or the call already switched): the error ends the call."""
        if call.widened or not call.policy.on_context_window_exceeded:
            return False
        log.info("context window exceeded: trying the route's larger-window targets")
        call.widened = True
        call.wider = call.policy.on_context_window_exceeded
        return True

    def _pay(self, call: _Call, target: TargetState) -> bool:
        """Deposit for a call's first attempt; withdraw from the culprit's budget for an
        extra one. False: the budget is spent, make no more attempts."""
        if call.attempts == 0:
            target.budget.deposit()
            return True
        culprit = call.cause or target
        if culprit.budget.try_withdraw():
            return True
        log.warning("retry budget exhausted", extra={"target": culprit.name})
        return False

    def _start(
        self, call: _Call, target: RouteTarget, state: TargetState, ticket: Ticket, mc: ModelCall
    ) -> Attempt:
        now = time.monotonic()
        timeout = target.attempt_timeout_s
        bounded_by_call = timeout is None or call.deadline.at <= now + timeout
        deadline = call.deadline if bounded_by_call else Deadline(now + (timeout or 0.0))
        provider = self._providers[target.name]
        call.attempts += 1
        # A provider applies its target's own timeout_s itself (and says so when it fires):
        # give it the call's deadline then, and the capped one only for other timeouts.
        own = timeout is not None and timeout == target.spec.timeout_s
        whole = call.whole_answer and call.policy.hedge is None and not target.streamed_timing
        sent = _for_target(mc, target.spec, whole=whole)
        events = provider.stream(sent, call.deadline if own else deadline)
        watchdog = Watchdog(
            deadline_at=deadline.at + GUARD_S,
            first_s=target.first_token_timeout_s,
            idle_s=target.idle_timeout_s,
            alarms=self._alarms,
        )
        return Attempt(
            target, state, ticket, events, deadline, bounded_by_call, now, watchdog, sent
        )

    async def _whole(self, call: _Call, opened: Opened, mc: ModelCall) -> SwitchboardError | None:
        """Read a whole call's committed attempt to its end. None: ``opened.events`` now
        replays the whole answer (its usage is in ``call.tab.answer``). Else the attempt's
        error (the attempt is in ``call.tab``); the caller's cancellation propagates, with
        what the attempt delivered until then in ``call.tab``."""
        seen: list[ProviderEvent] = []
        try:
            await whole.drain(opened.events, seen)
        except SwitchboardError as exc:
            call.tab.give_up(opened.target.ref, mc, seen, exc.message)
            return exc
        except BaseException:
            # The caller left mid-answer: what the upstream delivered until now is billed.
            if seen:
                call.tab.give_up(opened.target.ref, mc, seen, "cancelled by the caller")
            raise
        usage = [e.usage for e in seen if isinstance(e, UsageEvent) and not e.partial]
        call.tab.answer = usage[-1] if usage else None
        opened.events = whole.replay(seen)
        return None

    async def _attempt(
        self,
        call: _Call,
        *,
        target: RouteTarget,
        state: TargetState,
        ticket: Ticket,
        rest: list[RouteTarget],
        mc: ModelCall,
    ) -> _Outcome:
        """One attempt (and its hedge, if the policy hedges): the winner's outcome, or the
        last failure. Whatever did not win is closed before this returns or raises."""
        started: list[Attempt] = []
        winner: _Outcome | None = None
        try:
            primary = self._start(call, target, state, ticket, mc)
            started.append(primary)
            hedge = call.policy.hedge
            if hedge is None:
                outcome = await self._first(primary, call)
                winner = outcome if outcome.first is not None else None
                return outcome

            def start_hedge() -> Coroutine[Any, Any, _Outcome] | None:
                second = self._hedge(call, target, state, rest, mc)
                if second is None:
                    return None
                started.append(second)
                return self._first(second, call)

            won, others = await race(
                self._first(primary, call),
                hedge_delay_s(hedge, state.latency),
                start_hedge,
                lambda o: o.first is not None,
            )
            winner = won
            for lost in others:
                if lost.first is not None:  # began answering in the same instant: it cost
                    ref = lost.attempt.target.spec.ref
                    call.tab.give_up(ref, mc, [lost.first], "lost the hedge race")
            if won is not None:
                return won
            return others[-1]
        finally:
            for attempt in started:
                if winner is None or attempt is not winner.attempt:
                    attempt.ticket.abandoned()
                    attempt.watchdog.close()
                    await attempt.events.aclose()

    def _hedge(
        self,
        call: _Call,
        target: RouteTarget,
        state: TargetState,
        rest: list[RouteTarget],
        mc: ModelCall,
    ) -> Attempt | None:
        """The hedge attempt, if a target admits it and the slow target's budget pays."""
        hedge = call.policy.hedge
        assert hedge is not None
        candidates = [target] if hedge.to is HedgeTo.SAME else [*rest, target][:1]
        for candidate in candidates:
            if call.deadline.remaining() < call.policy.min_attempt_s:
                return None
            cstate = self._registry.get(candidate.name)
            try:
                ticket = cstate.breaker.admit()
            except BreakerOpen:
                continue
            if not state.budget.try_withdraw():
                ticket.abandoned()
                return None
            log.info("hedging", extra={"target": target.name, "hedge_target": candidate.name})
            return self._start(call, candidate, cstate, ticket, mc)
        return None

    async def _first(self, attempt: Attempt, call: _Call) -> _Outcome:
        """Wait for the attempt's first event, within its deadline. Failures are recorded
        in its breaker; cancellation records nothing (the caller closes the attempt). A
        non-streamed attempt cut short by time or a cancellation is kept in
        ``call.tab`` (:meth:`Tab.cut`)."""
        name = attempt.target.name
        try:
            first = await attempt.watchdog.read(attempt.events)
        except asyncio.CancelledError:
            if attempt.call.whole:
                call.tab.cut(attempt.target.spec.ref, attempt.call, "cancelled")
            raise
        except StopAsyncIteration:
            error: SwitchboardError = Unavailable(
                f"target {name!r} ended its answer before it began"
            )
        except Expired as exc:
            error = timed_out(attempt, exc, "began answering")
        except SwitchboardError as exc:
            error = exc
        else:
            attempt.state.latency.add(time.monotonic() - attempt.started)
            return _Outcome(attempt, first=first)
        if attempt.call.whole and isinstance(error, DeadlineExceeded):
            call.tab.cut(attempt.target.spec.ref, attempt.call, error.message)
        error.about(target=name)
        blame(attempt, error)
        return _Outcome(attempt, error=error)

    def _opened(self, call: _Call, outcome: _Outcome) -> Opened:
        assert outcome.first is not None
        attempt = outcome.attempt
        return Opened(attempt.target.spec, call.attempts, Committed(attempt, outcome.first))

    @staticmethod
    def _failure(call: _Call) -> SwitchboardError:
        if call.last_error is not None:
            return call.last_error
        if call.skipped:
            names = ", ".join(repr(s.target) for s in call.skipped)
            quotas = [s.cause for s in call.skipped if isinstance(s.cause, ResourceExhausted)]
            if len(quotas) == len(call.skipped):
                # Every circuit opened on an exhausted quota: waiting will not help, and the
                # caller learns that as it would have from the first failure.
                return ResourceExhausted(
                    f"no target can take the call now: circuit open for {names} after the "
                    f"upstream quota was exhausted: {quotas[0].message}",
                    violations=[v for q in quotas for v in q.violations],
                    reason=Reason.UPSTREAM_QUOTA_EXHAUSTED,
                ).about(target=call.skipped[0].target)
            waits = [s.retry_after_s for s in call.skipped if s.retry_after_s is not None]
            return Unavailable(
                f"no target can take the call now: circuit open for {names}",
                retry_after_s=min(waits) if waits else None,
                reason=Reason.CIRCUIT_OPEN,
            ).about(target=call.skipped[0].target)
        return DeadlineExceeded(
            f"deadline too close: an attempt needs at least {call.policy.min_attempt_s:g}s",
            reason=Reason.NO_TIME_LEFT,
        )


def _for_target(call: ModelCall, target: TargetSpec, *, whole: bool) -> ModelCall:
    """The call with the target's default parameters under the agent's and the caller's,
    marked ``whole`` when the attempt may take a non-streamed answer."""
    if target.parameters.unset() and call.whole == whole:
        return call
    return ModelCall(
        system_prompt=call.system_prompt,
        messages=call.messages,
        parameters=target.parameters.overridden_by(call.parameters),
        tools=call.tools,
        whole=whole,
    )
