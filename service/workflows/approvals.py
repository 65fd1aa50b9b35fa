"""What a workflow step parked for approvals uses: the approval gate's wait for decisions
and RunService's resume of the step's agent run (:class:`service.workflows.execute.StepApprovals`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractContextManager

from service.approvals.gate import Gate, holding_as
from service.deadline import Deadline
from service.runs.service import Runs
from service.workflows.events import RunEvent


class GateApprovals:
    """See the module docstring. Built once by the composition root."""

    def __init__(self, gate: Gate, runs: Runs) -> None:
        self._gate = gate
        self._runs = runs

    async def decided(self, tenant: str, ids: Sequence[str]) -> None:
        """Return once every approval of ``ids`` is decided or expired (polls the store:
        any replica's ApprovalService decides)."""
        await self._gate.decided(tenant, ids)

    def resume(self, run_id: str, deadline: Deadline) -> AsyncGenerator[RunEvent, None]:
        """The agent run ``run_id`` of the caller's (the run's) tenant, resumed: its steps so
        far replayed, then on (RunService.ResumeRun)."""
        return self._runs.resume(run_id, (), deadline)

    def holding_as(self, holder: str) -> AbstractContextManager[None]:
        """Claim and save runs as ``holder`` within the block (the gate's holding_as)."""
        return holding_as(holder)
