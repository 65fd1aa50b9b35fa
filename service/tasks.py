"""Stopping a task this process owns (a watcher, a replay loop, a probe), and a task group
whose failure is the failure of its first task that failed with a Switchboard error.

A background loop that retries on a store's error can outlive a single ``cancel()``: a driver
may turn the cancellation into its own error while it tears a connection down (seen with the
Redis and PostgreSQL clients under load), the loop takes that error for an outage and sleeps,
and an owner awaiting the task then waits forever. :func:`stop` cancels again until the task
has ended.

``asyncio.TaskGroup`` raises an ``ExceptionGroup`` when a task fails, which no error table
knows: a tool call's InvalidArgument or Unavailable would end the call INTERNAL. Every task
group in the service is :func:`task_group`, which raises the Switchboard error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from service.errors import SwitchboardError

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


def first_error(group: BaseExceptionGroup[BaseException]) -> SwitchboardError | None:
    """The first Switchboard error in ``group`` (depth first, in the order its tasks
    failed), or None when it holds none."""
    for exc in group.exceptions:
        if isinstance(exc, SwitchboardError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = first_error(exc)
            if found is not None:
                return found
    return None


@contextlib.asynccontextmanager
async def task_group() -> AsyncIterator[asyncio.TaskGroup]:
    """An ``asyncio.TaskGroup`` (leaving it waits for every task; a failure cancels the
    rest) that raises the first Switchboard error its tasks (or its body) failed with, not an
    ExceptionGroup of them. A group with none (a bug) is raised whole, every traceback in it;
    cancellation propagates as the TaskGroup lets it."""
    try:
        async with asyncio.TaskGroup() as group:
            yield group
    except BaseExceptionGroup as failed:
        error = first_error(failed)
        if error is None:
            raise
        raise error from None
