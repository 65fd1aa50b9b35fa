"""Runs as a service: read, list, cancel, resume and attach to the caller's tenant's runs,
whatever their kind (:mod:`service.runs.kinds`). RunService's servicer and AgentService's
Stream with ``run_id`` call it; every method reads the tenant from the call's context, so
another tenant's run is NOT_FOUND (RUN_NOT_FOUND), never visible."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.context import current
from service.deadline import Deadline
from service.domain import Event, Message
from service.echo import echo
from service.errors import FailedPrecondition, NotFound, Reason
from service.runs.kinds import RunKinds
from service.runs.records import ENDED, RunRecord, RunState
from service.runs.store import RunStore


class Runs:
    """See the module docstring."""

    def __init__(self, store: RunStore, kinds: RunKinds) -> None:
        self.store = store
        self.kinds = kinds

    async def get(self, run_id: str) -> RunRecord:
        """The caller's tenant's run ``run_id``.

        Raises:
            NotFound: no such run for this tenant (RUN_NOT_FOUND).
        """
        found = await self.store.get_run(current().tenant, run_id) if run_id else None
        if found is None:
            raise NotFound(
                f"no run {echo(run_id)} for this tenant", reason=Reason.RUN_NOT_FOUND
            ).about(run_id=run_id)
        return found

    async def list(
        self, *, before: str, limit: int, kind: str, state: RunState | None
    ) -> list[RunRecord]:
        """The caller's tenant's runs, newest first (``before``: the last id of a page)."""
        return await self.store.list_runs(
            current().tenant, before=before, limit=limit, kind=kind, state=state
        )

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run that has not ended: its row at once (a holder's next save fails),
        its pending approvals expire, and its kind stops what it holds elsewhere.

        Raises:
            NotFound: no such run. FailedPrecondition: it already ended.
        """
        run = await self.get(run_id)
        cancelled = None
        if run.state not in ENDED:
            cancelled = await self.store.cancel_run(run.tenant, run_id, time.time())
        if cancelled is None:
            ended = await self.get(run_id)
            raise FailedPrecondition(f"run {run_id} already ended ({ended.state.value})").about(
                run_id=run_id
            )
        await self.kinds.of(cancelled).cancel(cancelled)
        return cancelled

    async def resume(
        self, run_id: str, messages: Sequence[Message], deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """The run's events from a resume: the run so far, then on to its end (or until it
        parks again). A run that ended: its events, and its answer.

        Raises:
            NotFound, FailedPrecondition (held by another call: RUN_BUSY; cancelled:
            RUN_CANCELLED), InvalidArgument, and what the run's steps raise.
        """
        run = await self.get(run_id)
        async with aclosing(self.kinds.of(run).resume(run, messages, deadline)) as events:
            async for event in events:
                yield event
