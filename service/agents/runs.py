"""Agent runs (kind ``agent``): a tool loop parked for approvals, resumed on any replica.

Resuming claims the run in the store for this process until the call's deadline (plus a
margin): one claimer wins, so two replicas never run it twice; a holder that died leaves a
lease that passes, and then any replica takes it over (from its last checkpoint: a tool call
that was running when the holder died may run again). A run that ended is replayed: its
steps and answer, with nothing run or charged again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import TYPE_CHECKING

from service.approvals.gate import Gate
from service.context import current
from service.deadline import Deadline
from service.domain import Event, Message
from service.errors import FailedPrecondition, InvalidArgument, Reason
from service.runs.kinds import RunKind
from service.runs.records import ENDED, RunRecord, RunState
from service.runs.store import RunStore
from service.tools import checkpoint
from service.tools.replay import replay

if TYPE_CHECKING:
    from service.agents.runner import Runner

KIND = "agent"


class AgentRuns:
    """See the module docstring. :meth:`kind` is what the composition root registers."""

    def __init__(self, runner: Runner, gate: Gate, store: RunStore) -> None:
        self._runner = runner
        self._gate = gate
        self._store = store

    def kind(self) -> RunKind:
        return RunKind(resume=self.resume, attach=self.attach)

    async def resume(
        self, run: RunRecord, messages: Sequence[Message], deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """See :class:`service.runs.kinds.RunKind` and the module docstring."""
        if messages:
            raise InvalidArgument.field(
                "messages", "an agent run waits for approvals, not for messages: send none"
            )
        if run.state not in ENDED:
            claimed = await self._store.claim_run(
                run.tenant, run.run_id, self._gate.owner, self._gate.lease_until(deadline),
                time.time(),
            )  # fmt: skip
            if claimed is not None:
                state = checkpoint.decode(claimed.checkpoint)
                state.run_id = run.run_id
                request_id = current().request_id or state.request.request_id
                state.request = replace(state.request, request_id=request_id)
                async with aclosing(self._runner.continue_run(state, deadline)) as events:
                    async for event in events:
                        yield event
                return
            run = await self._store.get_run(run.tenant, run.run_id) or run
            if run.state not in ENDED:
                raise FailedPrecondition(
                    f"run {run.run_id} is running in another call; try again once it parks",
                    reason=Reason.RUN_BUSY,
                ).about(run_id=run.run_id)
        async with aclosing(self.attach(run, deadline)) as events:
            async for event in events:
                yield event

    async def attach(self, run: RunRecord, deadline: Deadline) -> AsyncGenerator[Event, None]:
        """An ended run's events (its steps, usage and Finish); a run still going is
        resumed (an agent run has no one else's events to follow: it runs where it is
        resumed)."""
        if run.state not in ENDED:
            async with aclosing(self.resume(run, (), deadline)) as events:
                async for event in events:
                    yield event
            return
        if run.state is RunState.CANCELLED:
            raise FailedPrecondition(
                f"run {run.run_id} was cancelled", reason=Reason.RUN_CANCELLED
            ).about(run_id=run.run_id)
        if run.state is RunState.FAILED:
            raise FailedPrecondition(f"run {run.run_id} failed: {run.error}").about(
                run_id=run.run_id
            )
        state = checkpoint.decode(run.checkpoint)
        state.run_id = run.run_id
        agent = self._runner.agent(state.request.agent)
        for event in replay(state, agent, current().request_id or run.request_id, ended=True):
            yield event
