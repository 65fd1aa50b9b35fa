"""Runs as a service: read, list, cancel, resume and attach to the caller's tenant's runs,
whatever their kind (:mod:`service.runs.kinds`). RunService's servicer and AgentService's
Stream with ``run_id`` call it; every method reads the tenant from the call's context, so
another tenant's run is NOT_FOUND (RUN_NOT_FOUND), never visible.

Runs are in the run store, or where their kind keeps them (``RunKind.records``: workflow
runs are DBOS's). A listing merges the sources by (created time, run id), newest first; its
page token holds each source's position (the last run of that source it showed), so paging
neither skips nor repeats a run whichever source it came from."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from service.context import current
from service.deadline import Deadline
from service.domain import Message
from service.echo import echo
from service.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from service.runs.kinds import RunKinds
from service.runs.records import ENDED, RunRecord, RunState
from service.runs.store import RunStore
from service.workflows.events import RunEvent

STORE = "store"  # the run store's position in a page token


def _positions(after: str) -> dict[str, str]:
    """A page token's positions by source ("" none; a bare run id: the run store's)."""
    if not after.startswith("{"):
        return {STORE: after} if after else {}
    try:
        value = json.loads(after)
    except (ValueError, RecursionError):  # RecursionError: deep nesting
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument.field("page_token", "not a token from a previous ListRuns response")
    return value


def _newest_first(entry: tuple[str, RunRecord]) -> tuple[float, str]:
    return (entry[1].created_at, entry[1].run_id)


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
        tenant = current().tenant
        found = await self.store.get_run(tenant, run_id) if run_id else None
        for _, records in self.kinds.with_records() if run_id else ():
            if found is None:
                found = await records.get(tenant, run_id)
        if found is None:
            raise NotFound(
                f"no run {echo(run_id)} for this tenant", reason=Reason.RUN_NOT_FOUND
            ).about(run_id=run_id)
        return found

    async def list(
        self, *, after: str, limit: int, kind: str, state: RunState | None
    ) -> tuple[list[RunRecord], str]:
        """Up to ``limit`` of the caller's tenant's runs, newest first, and the position
        after them ("" on the last page). ``after``: a position this gave ("": the newest).

        Raises:
            InvalidArgument: ``after`` is no position this gave (``page_token``).
        """
        tenant = current().tenant
        positions = _positions(after)
        found: list[tuple[str, RunRecord]] = []
        sources = [(k, r) for k, r in self.kinds.with_records() if kind in ("", k)]
        if not kind or kind not in {k for k, _ in self.kinds.with_records()}:
            before = positions.get(STORE, "")
            runs = await self.store.list_runs(
                tenant, before=before, limit=limit + 1, kind=kind, state=state
            )
            found += [(STORE, r) for r in runs]
        for name, records in sources:
            before = positions.get(name, "")
            runs = await records.list(tenant, before=before, limit=limit + 1, state=state)
            found += [(name, r) for r in runs]
        found.sort(key=_newest_first, reverse=True)
        page = found[:limit]
        if len(found) <= limit:
            return [r for _, r in page], ""
        for source, run in page:
            positions[source] = run.run_id
        return [r for _, r in page], json.dumps(positions, separators=(",", ":"))

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel a run that has not ended: its row at once (a holder's next save fails),
        its pending approvals expire, and its kind stops what it holds elsewhere.

        Raises:
            NotFound: no such run. FailedPrecondition: it already ended.
        """
        run = await self.get(run_id)
        handlers = self.kinds.of(run)
        cancelled = None
        if run.state not in ENDED and handlers.records is not None:
            await handlers.cancel(run)  # the kind keeps the run: it cancels it
            return await self.get(run_id)
        if run.state not in ENDED:
            cancelled = await self.store.cancel_run(run.tenant, run_id, time.time())
        if cancelled is None:
            ended = await self.get(run_id)
            raise FailedPrecondition(f"run {run_id} already ended ({ended.state.value})").about(
                run_id=run_id
            )
        await handlers.cancel(cancelled)
        return cancelled

    async def resume(
        self, run_id: str, messages: Sequence[Message], deadline: Deadline
    ) -> AsyncGenerator[RunEvent, None]:
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
