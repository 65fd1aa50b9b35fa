"""Workflow runs as RunService shows them (:class:`~service.runs.records.RunRecord`), read
from DBOS's own table of workflows: DBOS is the run's durable record, so there is no second
copy to keep in step with it.

A run is tagged at its start with DBOS attributes (``tenant``, ``workflow``, ``request_id``,
``key_id``); its body adds ``steps`` (finished steps so far) as it goes and ``error`` when it
ends failed (the body returns a failed run's error rather than raising it, so DBOS records
it as SUCCESS). Its DBOS user is its tenant too: listing filters on that column in the
database (DBOS filters on attributes only on PostgreSQL) and pages on (created time, run
id), newest first.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from dbos import DBOS

from service.runs.records import RunRecord, RunState
from service.workflows.execute import RUN_FUNCTION

_ACTIVE = {"PENDING", "ENQUEUED", "DELAYED"}
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


def attributes_of(status: Any) -> dict[str, Any]:
    return dict(status.attributes or {})


def state_of(status: Any) -> RunState:
    """The run's state from DBOS's status and the run's attributes."""
    attributes = attributes_of(status)
    if status.status in _ACTIVE:
        return RunState.WAITING if attributes.get("waiting") else RunState.RUNNING
    if status.status == "CANCELLED":
        return RunState.CANCELLED
    if status.status in _FAILED or attributes.get("error"):
        return RunState.FAILED
    return RunState.SUCCEEDED


def record_of(status: Any) -> RunRecord:
    """The RunRecord of a run's DBOS status."""
    attributes = attributes_of(status)
    state = state_of(status)
    error = ""
    if state is RunState.FAILED:
        error = str(attributes.get("error") or status.error or "the run failed")
    created = float(attributes.get("created") or (status.created_at or 0) / 1000)
    return RunRecord(
        run_id=status.workflow_id,
        tenant=str(attributes.get("tenant", "")),
        kind="workflow",
        name=str(attributes.get("workflow", "")),
        state=state,
        request_id=str(attributes.get("request_id", "")),
        key_id=str(attributes.get("key_id", "")),
        created_at=created,
        updated_at=max(created, (status.updated_at or 0) / 1000),
        error=error,
        steps=int(attributes.get("steps", 0)),
        pending=tuple(attributes.get("waiting") or ()),
    )


def is_run_of(status: Any, tenant: str) -> bool:
    """Whether ``status`` (None: no such workflow) is a workflow run, not a branch, of
    ``tenant``."""
    return (
        status is not None
        and status.name == RUN_FUNCTION
        and attributes_of(status).get("tenant") == tenant
    )


async def get_run(tenant: str, run_id: str) -> RunRecord | None:
    """``tenant``'s run ``run_id``, or None (none, or another tenant's)."""
    status = await DBOS.get_workflow_status_async(run_id)
    return record_of(status) if is_run_of(status, tenant) else None


async def list_runs(
    tenant: str,
    *,
    before: tuple[float, str] | None,
    limit: int,
    state: RunState | None = None,
) -> list[RunRecord]:
    """Up to ``limit`` of ``tenant``'s runs, newest first, that come after ``before`` (the
    (created_at, run_id) of the last run of the previous page), in ``state`` if given."""
    end_time = None
    if before is not None:  # a second late (DBOS's own time): the exact bound is filtered here
        end_time = datetime.datetime.fromtimestamp(before[0] + 1, datetime.UTC).isoformat()
    found: list[RunRecord] = []
    offset = 0
    while len(found) < limit:
        batch = await DBOS.list_workflows_async(
            name=RUN_FUNCTION,
            user=tenant,  # the run's DBOS user is its tenant (attributes: PostgreSQL only)
            end_time=end_time,
            sort_desc=True,
            limit=_BATCH,
            offset=offset,
            load_input=False,
            load_output=False,
        )
        offset += len(batch)
        for status in batch:
            record = record_of(status)
            if before is not None and position(record) >= before:
                continue  # on the previous page (same millisecond, or later)
            if state is None or record.state is state:
                found.append(record)
        if len(batch) < _BATCH:
            break
        if len(found) >= limit:
            # DBOS orders by its own created time (to the second on SQLite): rows past this
            # batch are older than its last row's second is over. Enough when that is older
            # than every run this page keeps.
            found.sort(key=position, reverse=True)
            if (batch[-1].created_at or 0) + 1000 <= found[limit - 1].created_at * 1000:
                break
    found.sort(key=position, reverse=True)
    return found[:limit]


def position(record: RunRecord) -> tuple[float, str]:
    """Where a run stands in a list: newest first is this, descending."""
    return (record.created_at, record.run_id)
