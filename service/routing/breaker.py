"""The one wrapper around pybreaker: a circuit breaker per target, safe for asyncio.

pybreaker 1.4.1 does not understand coroutines (``breaker.call(async_fn)`` counts nothing),
and inside ``calling()`` a ``CancelledError`` counts as a failure (listed in ``exclude`` it
counts as a success and resets the counter). A cancelled hedge loser or a caller that hangs
up must be neither. So the breaker is used in two steps:

- :meth:`Breaker.admit` decides, before the attempt, whether it may start (closed; open
  with its cool-down over, which moves it to half-open; half-open with a probe slot free),
  and returns a :class:`Ticket`.
- The attempt runs outside pybreaker. Its outcome is replayed into pybreaker with
  ``with breaker.calling(): raise error`` (no ``await`` inside, so no cancellation can get
  in): :meth:`Ticket.succeeded`, :meth:`Ticket.failed`. :meth:`Ticket.abandoned`
  (cancelled, closed early) records nothing.

The cool-down is measured on ``clock`` from when this process saw the circuit open (or
from the stored ``opened_at`` when it was opened elsewhere), so tests can advance time
without sleeping. State may live in Redis
(pybreaker's ``CircuitRedisStorage``) so replicas share it.

The breaker remembers the failure that opened the circuit (:attr:`Breaker.cause`, shared
through Redis too), and refuses with it (:attr:`BreakerOpen.cause`): the router reports a
circuit opened by an exhausted quota as that quota, not as a generic "circuit open".
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pybreaker

from service.errors import (
    QuotaViolation,
    Reason,
    ResourceExhausted,
    SwitchboardError,
    Unavailable,
)
from service.routing.breaker_storage import SharedStorage
from service.routing.policy import BreakerPolicy, RedisStorageSpec
from service.state.redis_client import sync_client

log = logging.getLogger(__name__)

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN

STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
"""A breaker state as a number, for metrics."""

StateListener = Callable[[str, str], None]
"""Called with (target name, new state) on every state change."""


StorageFactory = Callable[[str], pybreaker.CircuitBreakerStorage]
"""Builds the breaker state storage of the named target (default: in memory)."""


def redis_storage(spec: RedisStorageSpec) -> tuple[StorageFactory, Callable[[], None]]:
    """Breaker state shared through Redis (keys under ``<namespace>:<target>:pybreaker:*``,
    pybreaker's layout), and a function that closes the connection pool.

    pybreaker talks to Redis synchronously: each admit and outcome costs a round trip on
    the event loop (at most ``BREAKER_REDIS_TIMEOUT_S``), fine on a local network. While
    Redis fails, each breaker counts in this process; see
    :class:`service.routing.breaker_storage.SharedStorage`. The client heals after a Redis
    restart (:mod:`service.state.redis_client`).
    """
    client = sync_client(spec.url, timeout_s=BREAKER_REDIS_TIMEOUT_S)

    def storage(target: str) -> pybreaker.CircuitBreakerStorage:
        return SharedStorage(CLOSED, client, namespace=f"{spec.namespace}:{target}")

    return storage, client.close


BREAKER_REDIS_TIMEOUT_S = 0.25


class BreakerOpen(Unavailable):
    """The target's circuit is open: no attempt was made. Falls back like UNAVAILABLE; does
    not itself count against any breaker. ``retry_after_s`` is the cool-down left; ``cause``
    the failure that opened the circuit, when this process saw it (an exhausted quota stays
    a quota error for the callers that come after it)."""

    counts_against_breaker = False
    reason = Reason.CIRCUIT_OPEN

    def __init__(
        self,
        message: str,
        *,
        target: str,
        retry_after_s: float | None,
        cause: SwitchboardError | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.target = target
        self.cause = cause
        self.about(target=target)


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._on_change(new_state.name)


class Breaker:
    """A target's circuit breaker. Long-lived: survives config reloads (see ``configure``)."""

    def __init__(
        self,
        target: str,
        policy: BreakerPolicy,
        *,
        clock: Callable[[], float] = time.time,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        on_change: StateListener | None = None,
    ) -> None:
        self.target = target
        self._clock = clock
        self._on_change = on_change
        self._storage = storage or pybreaker.CircuitMemoryStorage(CLOSED)
        self._in_memory = type(self._storage) is pybreaker.CircuitMemoryStorage
        self._policy = policy
        self._probes = 0
        self._opened_at: float | None = None
        self._failing: SwitchboardError | None = None  # the failure being recorded
        self._cause: SwitchboardError | None = None  # the failure that opened the circuit
        self._lock = threading.Lock()
        self._cb = pybreaker.CircuitBreaker(
            fail_max=policy.fail_max,
            reset_timeout=policy.reset_timeout_s,
            success_threshold=policy.success_threshold,
            state_storage=self._storage,
            listeners=[_Listener(self._changed)],
            name=target,
            throw_new_error_on_trip=False,
        )

    def configure(self, policy: BreakerPolicy) -> None:
        """Apply new thresholds, keeping the current state and counters."""
        self._policy = policy
        self._cb.fail_max = policy.fail_max
        self._cb.reset_timeout = policy.reset_timeout_s
        self._cb.success_threshold = policy.success_threshold

    @property
    def policy(self) -> BreakerPolicy:
        return self._policy

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (as stored: shared when in Redis)."""
        return str(self._cb.state.name)

    @property
    def fail_counter(self) -> int:
        return int(self._cb.fail_counter)

    @property
    def cause(self) -> SwitchboardError | None:
        """The failure that opened the circuit: seen here, or, with shared storage, stored
        by the replica that saw it. None when closed or unknown."""
        if self.state == CLOSED:
            return None
        if isinstance(self._storage, SharedStorage):
            return decode_cause(self._storage.cause) or self._cause
        return self._cause

    def cooldown_left(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self.state != OPEN:
            return 0.0
        opened_at = self._opened_at
        if opened_at is None:  # opened before this process looked (shared storage)
            stored = self._storage.opened_at
            opened_at = stored.timestamp() if stored is not None else self._clock()
            self._opened_at = opened_at
        return max(0.0, opened_at + self._policy.reset_timeout_s - self._clock())

    def admit(self) -> Ticket:
        """A ticket for one attempt.

        Raises:
            BreakerOpen: the circuit is open and cooling down, or half-open with every
                probe slot taken.
        """
        state = self.state
        if state == OPEN:
            left = self.cooldown_left()
            if left > 0:
                cause = self.cause
                why = f": {cause.message}" if cause is not None else ""
                raise BreakerOpen(
                    f"target {self.target!r} is failing (circuit open){why}",
                    target=self.target,
                    retry_after_s=left,
                    cause=cause,
                )
            self._cb.half_open()
            state = HALF_OPEN
        if state == HALF_OPEN:
            with self._lock:
                if self._probes >= self._policy.half_open_probes:
                    raise BreakerOpen(
                        f"target {self.target!r} is being probed (circuit half-open)",
                        target=self.target,
                        retry_after_s=None,
                        cause=self.cause,
                    )
                self._probes += 1
            return Ticket(self, probe=True)
        return Ticket(self, probe=False)

    def _record(self, error: SwitchboardError | None) -> None:
        if error is None and self._in_memory and self._cb.state.name == CLOSED:
            # A success while closed, the counters in this process: all pybreaker does is
            # zero the failure counter (the closed state's and the listeners' success hooks
            # are no-ops), so it is done here, without its context manager per call.
            self._storage.reset_counter()
            return
        # The outcome is replayed synchronously: nothing awaits inside calling(), so a
        # CancelledError can never be counted here. The failure is kept while pybreaker
        # counts it, so the listener can remember the one that opened the circuit.
        self._failing = error
        try:
            with self._cb.calling():
                if error is not None:
                    raise error
        except pybreaker.CircuitBreakerError:
            pass  # opened meanwhile by another attempt: nothing more to count
        except SwitchboardError as exc:
            if exc is not error:
                raise
        finally:
            self._failing = None

    def _release_probe(self) -> None:
        with self._lock:
            self._probes = max(0, self._probes - 1)

    def _changed(self, state: str) -> None:
        # The cool-down runs on our clock from when this process saw the circuit open.
        self._opened_at = self._clock() if state == OPEN else None
        if state == OPEN:
            # A failed half-open probe reopens it: keep the first cause if the probe's is
            # unknown.
            # Kept detached (no traceback, so none of the failed call's frames stay alive).
            self._cause = decode_cause(encode_cause(self._failing)) or self._cause
            self._share_cause(self._cause)
        elif state == CLOSED:
            self._cause = None
            self._share_cause(None)
        if state == HALF_OPEN:
            with self._lock:
                self._probes = 0
        level = logging.WARNING if state == OPEN else logging.INFO
        log.log(
            level,
            "circuit breaker state changed",
            extra={"target": self.target, "breaker_state": state},
        )
        if self._on_change is not None:
            self._on_change(self.target, state)

    def _share_cause(self, cause: SwitchboardError | None) -> None:
        if isinstance(self._storage, SharedStorage) and (cause is None or self._failing):
            self._storage.cause = encode_cause(cause)


def encode_cause(cause: SwitchboardError | None) -> str | None:
    """The failure that opened a circuit, as text for the shared storage: its kind, reason,
    message and quota violations (nothing else: no secrets, no request)."""
    if cause is None:
        return None
    violations = getattr(cause, "violations", ())
    return json.dumps(
        {
            "kind": "quota" if isinstance(cause, ResourceExhausted) else "other",
            "reason": str(cause.reason),
            "message": cause.message,
            "quota": [[v.subject, v.description] for v in violations if hasattr(v, "subject")],
        }
    )


def decode_cause(text: str | None) -> SwitchboardError | None:
    """The error :func:`encode_cause` stored (None for nothing or something unreadable)."""
    if not text:
        return None
    try:
        raw = json.loads(text)
        message, reason = str(raw["message"]), Reason(raw["reason"])
        if raw["kind"] == "quota":
            quota = [QuotaViolation(str(s), str(d)) for s, d in raw["quota"]]
            return ResourceExhausted(message, violations=quota, reason=reason)
        return Unavailable(message, reason=reason)
    except (ValueError, KeyError, TypeError):
        return None


class Ticket:
    """The right to make one attempt. Record its outcome once; later calls do nothing."""

    __slots__ = ("_breaker", "_done", "_probe")

    def __init__(self, breaker: Breaker, *, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe
        self._done = False

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        if self._probe:
            self._breaker._release_probe()
        return True

    def succeeded(self) -> None:
        """The target answered: counts as a success."""
        if self._finish():
            self._breaker._record(None)

    def failed(self, error: SwitchboardError) -> None:
        """The target failed with ``error``: counts as a failure when the error counts
        against the breaker; otherwise (a caller error, a rate limit) records nothing."""
        if self._finish() and error.counts_against_breaker:
            self._breaker._record(error)

    def abandoned(self) -> None:
        """Cancelled or closed before an outcome (a hedge loser, a caller gone): nothing."""
        self._finish()
