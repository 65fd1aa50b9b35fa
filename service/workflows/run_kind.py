"""Workflow runs in RunService (kind ``workflow``, :mod:`service.runs.kinds`): read and
listed from DBOS's table of workflows (:mod:`service.workflows.records`), followed from
their durable log, cancelled with every branch, and resumed after a cancellation from their
last finished step.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.deadline import Deadline
from service.domain import Message
from service.errors import InvalidArgument
from service.runs.kinds import RunKind
from service.runs.records import RunRecord, RunState
from service.workflows.events import RunEvent
from service.workflows.records import WorkflowRecords
from service.workflows.runs import Workflows, resume_cancelled


class WorkflowRunKind:
    """See the module docstring. :meth:`kind` is what the composition root registers."""

    def __init__(self, workflows: Workflows) -> None:
        self._workflows = workflows

    def kind(self) -> RunKind:
        return RunKind(
            resume=self.resume, attach=self.attach, cancel=self.cancel, records=WorkflowRecords()
        )

    async def resume(
        self, run: RunRecord, messages: Sequence[Message], deadline: Deadline
    ) -> AsyncGenerator[RunEvent, None]:
        """A cancelled run goes on from its last finished step (its cancelled branches
        too); any other is followed to its end (one that ended: its steps and answer, with
        nothing run again; one that waits for approvals: see :meth:`attach`).

        Raises:
            InvalidArgument: ``messages`` given (a workflow run waits for none). The run's
            failed step's error.
        """
        if messages:
            raise InvalidArgument.field("messages", "a workflow run waits for no messages")
        if run.state is RunState.CANCELLED:
            await resume_cancelled(run.run_id)
        async with aclosing(self.attach(run, deadline)) as events:
            async for event in events:
                yield event

    async def attach(self, run: RunRecord, deadline: Deadline) -> AsyncGenerator[RunEvent, None]:
        """The run's finished steps, then live to its end (Workflows.attach)."""
        async with aclosing(self._workflows.attach(run.run_id, deadline)) as events:
            async for event in events:
                yield event

    async def cancel(self, run: RunRecord) -> None:
        """Cancel the run and every branch of it (Workflows.cancel)."""
        await self._workflows.cancel(run.run_id)
