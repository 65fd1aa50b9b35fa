"""A caller of a run that waits for a person: its call ends, OK, with
FINISH_REASON_APPROVAL_PENDING and the run id when its deadline would pass first (the run
goes on waiting, durably, and continues once decided), as a single agent's parked call does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dbos import DBOS

from service.deadline import Deadline
from service.domain import Finish, FinishReason, UsageEvent
from service.workflows.events import RunEvent, StepResult, total_usage
from service.workflows.records import pending_of

MARGIN_S = 1.0  # the call ends this long before its deadline
POLL_S = 0.25  # how often a call past its margin asks whether the run still waits


async def waiting(run_id: str) -> bool:
    """Whether the run waits for approvals now (a step's ``waiting:`` attribute)."""
    status = await DBOS.get_workflow_status_async(run_id)
    return status is not None and bool(pending_of(dict(status.attributes or {})))


async def parked_first(future: asyncio.Future[Any], run_id: str, deadline: Deadline | None) -> bool:
    """Wait for ``future``; True (``future`` cancelled) when the run waits for approvals
    and ``deadline`` (None: none) is within :data:`MARGIN_S`."""
    while not future.done():
        left = None if deadline is None else deadline.remaining() - MARGIN_S
        if left is not None and left <= 0:
            if await waiting(run_id):
                future.cancel()
                return True
            left = POLL_S
        await asyncio.wait({future}, timeout=left)
    return False


def parked_ending(run_id: str, steps: list[StepResult]) -> list[RunEvent]:
    """The last events of a call that leaves a run waiting: the steps' usage so far, and a
    Finish(APPROVAL_PENDING) with the run id."""
    return [
        UsageEvent(total_usage(steps)),
        Finish(FinishReason.APPROVAL_PENDING, sum(s.attempts for s in steps), run_id=run_id),
    ]
