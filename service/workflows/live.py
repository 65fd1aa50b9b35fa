"""Live events of the runs executing in this process, for the callers attached to them.

The workflow body publishes every event (deltas included) here; a caller that started a
run, or attached to one running in this process, reads its own queue. Nothing here is
durable: the durable log is DBOS's stream (:mod:`service.workflows.execute`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from service.workflows.events import RunEvent


class Done:
    """The last item of a run's live queue: the body returned (or failed) in this process."""

    __slots__ = ()


DONE = Done()
LiveItem = RunEvent | Done


class LiveRuns:
    """run id → the queues of the callers listening."""

    def __init__(self) -> None:
        self._queues: dict[str, list[asyncio.Queue[LiveItem]]] = defaultdict(list)
        self._tasks: dict[str, set[asyncio.Task[object]]] = defaultdict(set)

    def listen(self, run_id: str) -> asyncio.Queue[LiveItem]:
        queue: asyncio.Queue[LiveItem] = asyncio.Queue()
        self._queues[run_id].append(queue)
        return queue

    def leave(self, run_id: str, queue: asyncio.Queue[LiveItem]) -> None:
        queues = self._queues.get(run_id)
        if queues and queue in queues:
            queues.remove(queue)
            if not queues:
                del self._queues[run_id]

    def publish(self, run_id: str, item: LiveItem) -> None:
        for queue in self._queues.get(run_id, ()):
            queue.put_nowait(item)

    def executing(self, run_id: str, task: asyncio.Task[object]) -> None:
        """``task`` runs (part of) ``run_id`` here: :meth:`cancel` cancels it."""
        self._tasks[run_id].add(task)
        task.add_done_callback(lambda t: self._forget(run_id, t))

    def _forget(self, run_id: str, task: asyncio.Task[object]) -> None:
        tasks = self._tasks.get(run_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[run_id]

    def cancel(self, run_id: str) -> int:
        """Cancel every task of ``run_id`` running here; how many there were."""
        tasks = list(self._tasks.get(run_id, ()))
        for task in tasks:
            task.cancel()
        return len(tasks)

    def cancel_all(self) -> list[asyncio.Task[object]]:
        """Cancel every task of every run here; the tasks, to wait for."""
        tasks = [task for tasks in self._tasks.values() for task in tasks]
        for task in tasks:
            task.cancel()
        return tasks
