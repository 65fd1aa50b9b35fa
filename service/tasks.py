"""Stopping a task this process owns (a watcher, a replay loop, a probe).

A background loop that retries on a store's error can outlive a single ``cancel()``: a driver
may turn the cancellation into its own error while it tears a connection down (seen with the
Redis and PostgreSQL clients under load), the loop takes that error for an outage and sleeps,
and an owner awaiting the task then waits forever. :func:`stop` cancels again until the task
has ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.5


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and return once it ended, cancelling it again every ``RECANCEL_S``
    while it runs. Its result or error is dropped; the caller's own cancellation propagates
    (``asyncio.wait`` never swallows it)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=RECANCEL_S)
    if not task.cancelled():
        task.exception()  # retrieved: the owner stopped it, its outcome is not news
