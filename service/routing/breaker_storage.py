"""Breaker state shared through Redis, that keeps working while Redis does not.

pybreaker's ``CircuitRedisStorage`` reads a circuit as closed whenever Redis fails (a
breaker stops breaking during the outage), raises when Redis is unreachable as it is built,
and logs a traceback per failed command. This storage speaks the same key layout
(``<namespace>:pybreaker:<field>``, so replicas on either agree) and instead:

- mirrors every value in process memory, and serves from the mirror while Redis fails, so
  the breaker keeps counting and opening locally;
- tries Redis again ``RETRY_S`` after a failure (each command blocks the event loop for up
  to the client's timeout, so a dead Redis is not asked on every admit);
- when Redis answers with the keys gone (a restart or flush), writes the mirror back, so an
  open circuit stays open and the replicas share state again at once.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pybreaker
import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_S = 0.25
"""After a failed Redis command, the mirror answers alone for this long."""


class SharedStorage(pybreaker.CircuitBreakerStorage):
    """One target's breaker state in Redis under ``namespace``, mirrored locally."""

    def __init__(
        self,
        state: str,
        client: redis.Redis,
        namespace: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("redis")
        self._redis = client
        self._prefix = f"{namespace}:pybreaker:"
        self._clock = clock
        self._retry_at = 0.0
        self._down = False
        self._state = state
        self._fails = 0
        self._successes = 0
        self._opened_at: datetime | None = None
        self._cause: str | None = None
        self._cause_key = f"{namespace}:switchboard:cause"
        self._shared(self._seed, lambda: None)

    def _key(self, field: str) -> str:
        return self._prefix + field

    def _shared(self, remote: Callable[[], T], local: Callable[[], T]) -> T:
        """``remote()`` unless Redis failed less than RETRY_S ago or fails now; else
        ``local()``."""
        if self._down and self._clock() < self._retry_at:
            return local()
        try:
            result = remote()
        except redis.RedisError as exc:
            self._retry_at = self._clock() + RETRY_S
            if not self._down:
                self._down = True
                log.warning(
                    "breaker state storage failed; breakers count in this process until it answers",
                    extra={"namespace": self._prefix, "error": type(exc).__name__},
                )
            return local()
        if self._down:
            self._down = False
            log.warning("breaker state storage answers again", extra={"namespace": self._prefix})
        return result

    def _seed(self) -> None:
        """Create missing keys from the mirror (first use, or Redis lost them)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.setnx(self._key("state"), self._state)
        pipe.setnx(self._key("fail_counter"), self._fails)
        pipe.setnx(self._key("success_counter"), self._successes)
        if self._opened_at is not None:
            pipe.setnx(self._key("opened_at"), calendar.timegm(self._opened_at.timetuple()))
        pipe.execute()

    @property
    def state(self) -> str:
        def remote() -> str:
            raw = self._redis.get(self._key("state"))
            if raw is None:
                self._seed()
                return self._state
            self._state = raw.decode() if isinstance(raw, bytes) else str(raw)
            return self._state

        return self._shared(remote, lambda: self._state)

    @state.setter
    def state(self, state: str) -> None:
        self._state = str(state)
        self._shared(lambda: self._redis.set(self._key("state"), self._state), lambda: None)

    def increment_counter(self) -> None:
        self._fails += 1

        def remote() -> None:
            self._fails = int(self._redis.incr(self._key("fail_counter")))

        self._shared(remote, lambda: None)

    def reset_counter(self) -> None:
        self._fails = 0
        self._shared(lambda: self._redis.set(self._key("fail_counter"), 0), lambda: None)

    def increment_success_counter(self) -> None:
        self._successes += 1

        def remote() -> None:
            self._successes = int(self._redis.incr(self._key("success_counter")))

        self._shared(remote, lambda: None)

    def reset_success_counter(self) -> None:
        self._successes = 0
        self._shared(lambda: self._redis.set(self._key("success_counter"), 0), lambda: None)

    @property
    def counter(self) -> int:
        def remote() -> int:
            self._fails = int(self._redis.get(self._key("fail_counter")) or 0)
            return self._fails

        return self._shared(remote, lambda: self._fails)

    @property
    def success_counter(self) -> int:
        def remote() -> int:
            self._successes = int(self._redis.get(self._key("success_counter")) or 0)
            return self._successes

        return self._shared(remote, lambda: self._successes)

    @property
    def opened_at(self) -> datetime | None:
        def remote() -> datetime | None:
            raw = self._redis.get(self._key("opened_at"))
            if raw:
                self._opened_at = datetime.fromtimestamp(int(raw), UTC)
            return self._opened_at

        return self._shared(remote, lambda: self._opened_at)

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        self._opened_at = now
        seconds = calendar.timegm(now.timetuple())
        self._shared(lambda: self._redis.set(self._key("opened_at"), seconds), lambda: None)

    # Not pybreaker's: why the circuit opened, so replicas report a quota as a quota.
    @property
    def cause(self) -> str | None:
        """The opening failure as :mod:`service.routing.breaker` encoded it (None: unknown)."""

        def remote() -> str | None:
            raw = self._redis.get(self._cause_key)
            self._cause = raw.decode() if isinstance(raw, bytes) else raw
            return self._cause

        return self._shared(remote, lambda: self._cause)

    @cause.setter
    def cause(self, text: str | None) -> None:
        self._cause = text

        def remote() -> None:
            if text is None:
                self._redis.delete(self._cause_key)
            else:
                self._redis.set(self._cause_key, text)

        self._shared(remote, lambda: None)
