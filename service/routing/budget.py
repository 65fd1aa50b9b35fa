"""A retry budget per target, so a target that is down for everyone causes no retry storm.

In the spirit of gRPC retry throttling, Envoy's retry budgets and Finagle's RetryBudget: a
token bucket per target. Every call whose first attempt goes to the target deposits
``ratio`` tokens; every extra attempt caused by the target (a retry on it, a fallback after
its failure, a hedge because it was slow) withdraws one token, and is not made when no
whole token is left. The bucket holds at most ``burst`` tokens and refills ``min_per_s``
per second, so over any period extra attempts stay below ``ratio`` * calls + a constant:
during a full outage under load, about 1 + ratio upstream attempts per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service.routing.policy import BudgetPolicy


class RetryBudget:
    """One target's bucket. Not thread-safe; used from the event loop only."""

    def __init__(
        self, policy: BudgetPolicy, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._tokens = policy.burst
        self._at = clock()

    def configure(self, policy: BudgetPolicy) -> None:
        """Apply new settings, keeping the tokens (capped by the new burst)."""
        self._refill()
        self._policy = policy
        self._tokens = min(self._tokens, policy.burst)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def deposit(self) -> None:
        """A call made its first attempt on this target."""
        self._refill()
        self._tokens = min(self._policy.burst, self._tokens + self._policy.ratio)

    def try_withdraw(self) -> bool:
        """Take one token for an extra attempt; False (and nothing taken) when none is left."""
        self._refill()
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        if elapsed and self._policy.min_per_s:
            self._tokens = min(self._policy.burst, self._tokens + elapsed * self._policy.min_per_s)
