"""Workflow runs as RunService shows them (:class:`~service.runs.records.RunRecord`), read
from DBOS's own table of workflows: DBOS is the run's durable record, so there is no second
copy to keep in step with it.

A run starts with the attributes :func:`tag` gives (its tenant, workflow, request id, key and
a fine created time); its body adds ``steps`` (finished steps so far) and ``updated`` (when
the last one finished: DBOS's own updated time is whole seconds on SQLite) as it goes,
``waiting:<step id>`` (the approval ids a parked step waits for: one key per step, so
branches waiting at once do not overwrite each other) while it waits, and ``error`` when it
ends failed (the body returns a failed run's error rather than raising it, so DBOS records
it SUCCESS); :mod:`service.workflows.attributes` names them.
Its DBOS user is its tenant too: listing filters on that column in the database (DBOS
filters on attributes only on PostgreSQL) and pages on (created time, run id), newest first.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from dbos import DBOS

from service.runs.records import RunRecord, RunState
from service.workflows import attributes as names
from service.workflows.execute import RUN_FUNCTION

KIND = "workflow"
ACTIVE = ("PENDING", "ENQUEUED", "DELAYED")
_FAILED = {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}
_BATCH = 200  # rows read per query while paging


def tag(tenant: str, workflow: str, request_id: str, key_id: str) -> dict[str, Any]:
    """The attributes a run starts with (``created``: unix seconds, finer than DBOS's own
    created time, which SQLite keeps to the second)."""
    return {
        "tenant": tenant,
        "workflow": workflow,
        "request_id": request_id,
        "key_id": key_id,
        "created": time.time(),
    }


def _attributes(status: Any) -> dict[str, Any]:
    return dict(status.attributes or {})


def is_run_of(status: Any, tenant: str) -> bool:
    """Whether ``status`` (a DBOS workflow status) is a workflow run, not a branch, of
    ``tenant``."""
    return bool(status.name == RUN_FUNCTION and _attributes(status).get("tenant") == tenant)


def pending_of(attributes: dict[str, Any]) -> tuple[str, ...]:
    """The approval ids the run's steps wait for now, in their steps' order."""
    found: list[str] = []
    for key, value in attributes.items():
        if key.startswith(names.WAITING) and isinstance(value, list):
            found += [str(v) for v in value]
    return tuple(found)


def state_of(status: Any) -> RunState:
    """The run's state from DBOS's status and the run's attributes."""
    attributes = _attributes(status)
    if status.status in ACTIVE:
        return RunState.WAITING if pending_of(attributes) else RunState.RUNNING
    if status.status == "CANCELLED":
        return RunState.CANCELLED
    if status.status in _FAILED or attributes.get(names.ERROR):
        return RunState.FAILED
    return RunState.SUCCEEDED


def record_of(status: Any) -> RunRecord:
    """The RunRecord of a run's DBOS status (times: unix seconds)."""
    attributes = _attributes(status)
    state = state_of(status)
    error = ""
    if state is RunState.FAILED:
        error = str(attributes.get(names.ERROR) or status.error or "the run failed")
    created = float(attributes.get("created") or (status.created_at or 0) / 1000)
    return RunRecord(
        run_id=status.workflow_id,
        tenant=str(attributes.get("tenant", "")),
        kind=KIND,
        name=str(attributes.get("workflow", "")),
        state=state,
        request_id=str(attributes.get("request_id", "")),
        key_id=str(attributes.get("key_id", "")),
        created_at=created,
        updated_at=max(
            created, float(attributes.get(names.UPDATED) or 0), (status.updated_at or 0) / 1000
        ),
        error=error,
        steps=int(attributes.get(names.STEPS, 0)),
        pending=pending_of(attributes) if state is RunState.WAITING else (),
    )


class WorkflowRecords:
    """The ``records`` of the workflow kind (:class:`service.runs.kinds.RunRecords`)."""

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        """``tenant``'s run ``run_id``, or None (none, a branch, or another tenant's)."""
        status = await DBOS.get_workflow_status_async(run_id)
        return record_of(status) if status is not None and is_run_of(status, tenant) else None

    async def list(
        self, tenant: str, *, before: str, limit: int, state: RunState | None
    ) -> list[RunRecord]:
        """Up to ``limit`` of ``tenant``'s runs, newest first, older than the run
        ``before`` ("": from the newest), in ``state`` if given."""
        bound: tuple[float, str] | None = None
        end_time = None
        if before:
            last = await self.get(tenant, before)
            if last is None:
                return []
            bound = _position(last)
            # DBOS stamps its own (coarser, a little later) created time: the exact bound is here.
            end_time = datetime.datetime.fromtimestamp(bound[0] + 5, datetime.UTC).isoformat()
        found: list[RunRecord] = []
        offset = 0
        while True:
            batch = await DBOS.list_workflows_async(
                name=RUN_FUNCTION, user=tenant, end_time=end_time, sort_desc=True,
                limit=_BATCH, offset=offset, load_input=False, load_output=False,
            )  # fmt: skip
            offset += len(batch)
            for status in batch:
                record = record_of(status)
                if bound is not None and _position(record) >= bound:
                    continue  # shown already (or newer than the bound)
                if state is None or record.state is state:
                    found.append(record)
            found.sort(key=_position, reverse=True)
            if len(batch) < _BATCH:
                break
            # DBOS orders by its own created time: rows past this batch are no newer than
            # its last row's second. Enough once that is older than every run kept.
            if len(found) >= limit and (batch[-1].created_at or 0) + 1000 <= (
                found[limit - 1].created_at * 1000
            ):
                break
        return found[:limit]


def _position(record: RunRecord) -> tuple[float, str]:
    """Where a run stands in a list: newest first is this, descending."""
    return (record.created_at, record.run_id)
