"""Retry decisions: when to wait and try the same target again, and for how long.

Exponential backoff with full jitter (the AWS architecture blog's "full jitter": a uniform
delay between 0 and ``min(backoff_max_s, backoff_base_s * 2**n)``), for retryable errors
only, bounded by attempts and by the deadline. An upstream ``retry_after_s`` replaces the
backoff when it fits in the time left and under ``max_retry_after_s``; otherwise the target
is not retried at all (the router falls back, or fails at once carrying the retry-after).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from service.errors import SwitchboardError
from service.routing.policy import RetryPolicy


@dataclass(frozen=True, slots=True)
class Retry:
    """Wait ``delay_s``, then try the same target again."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class MoveOn:
    """Do not retry this target; ``why`` is for the log."""

    why: str


def backoff_s(policy: RetryPolicy, retry: int, rng: random.Random) -> float:
    """Full-jitter delay before retry number ``retry`` (0 for the first retry)."""
    cap = min(policy.backoff_max_s, policy.backoff_base_s * (2.0**retry))
    return rng.uniform(0.0, cap)


def decide(
    error: SwitchboardError,
    *,
    policy: RetryPolicy,
    attempts_on_target: int,
    time_left_s: float,
    min_attempt_s: float,
    rng: random.Random,
) -> Retry | MoveOn:
    """Whether to retry the target that just failed with ``error`` (a retryable error).

    ``time_left_s`` is what remains of the call's deadline; a retry must leave at least
    ``min_attempt_s`` for its attempt after the wait.
    """
    if attempts_on_target >= policy.max_attempts:
        return MoveOn(f"{attempts_on_target} attempt(s) made on this target")
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after is not None:
        if retry_after > policy.max_retry_after_s:
            return MoveOn(f"retry-after {retry_after:.3f}s is over the cap")
        if retry_after + min_attempt_s > time_left_s:
            return MoveOn(f"retry-after {retry_after:.3f}s does not fit in the deadline")
        return Retry(retry_after)
    delay = backoff_s(policy, attempts_on_target - 1, rng)
    if delay + min_attempt_s > time_left_s:
        return MoveOn("no time left for a retry")
    return Retry(delay)
