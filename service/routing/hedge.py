"""Hedged attempts: a second attempt when the first is slow to begin; the first to begin wins.

The race runs its attempts as tasks of one task group (:func:`service.tasks.task_group`: an
attempt's Switchboard error comes out as itself, not in an ExceptionGroup); leaving it
cancels every attempt still running (the loser, or all of them when the caller is
cancelled), so no task outlives the race. What the losers opened (their HTTP requests) is
closed by the caller of :func:`race`, which owns them.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from service.routing.policy import HedgePolicy
from service.tasks import task_group

T = TypeVar("T")

MIN_SAMPLES = 20


class LatencyWindow:
    """A target's recent times to first event, for its p95."""

    def __init__(self, size: int = 256) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._p95: float | None = None
        self._stale = 0

    def add(self, seconds: float) -> None:
        self._samples.append(seconds)
        self._stale += 1

    def __len__(self) -> int:
        return len(self._samples)

    def p95(self) -> float | None:
        """The 95th percentile of the window, or None with fewer than MIN_SAMPLES samples."""
        if len(self._samples) < MIN_SAMPLES:
            return None
        if self._p95 is None or self._stale >= 16:
            ordered = sorted(self._samples)
            self._p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]  # nearest rank
            self._stale = 0
        return self._p95


def hedge_delay_s(policy: HedgePolicy, latency: LatencyWindow) -> float:
    """How long the first attempt may take to begin before the hedge starts."""
    if policy.delay_s is not None:
        return policy.delay_s
    p95 = latency.p95()
    return max(policy.min_delay_s, policy.fallback_delay_s if p95 is None else p95)


async def race(
    primary: Coroutine[Any, Any, T],
    delay_s: float,
    start_hedge: Callable[[], Coroutine[Any, Any, T] | None],
    won: Callable[[T], bool],
) -> tuple[T | None, list[T]]:
    """Run ``primary``; if it has not finished after ``delay_s``, also run what
    ``start_hedge`` returns (None: no hedge). The first outcome for which ``won`` is true
    wins: the other attempt is cancelled.

    Returns the winner (None when every attempt failed) and the other finished outcomes
    (failures, or a second success that finished in the same instant). Cancelled attempts
    are not returned. Cancelling the caller cancels every attempt.
    """
    winner: T | None = None
    others: list[T] = []
    async with task_group() as group:
        pending: set[asyncio.Task[T]] = {group.create_task(primary)}
        done, pending = await asyncio.wait(pending, timeout=delay_s)
        if not done:
            hedge = start_hedge()
            if hedge is not None:
                pending.add(group.create_task(hedge))
        while True:
            for task in done:
                outcome = task.result()
                if winner is None and won(outcome):
                    winner = outcome
                else:
                    others.append(outcome)
            if winner is not None or not pending:
                break
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    return winner, others
