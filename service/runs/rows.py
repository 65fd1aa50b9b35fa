"""A run as a table row (the ``runs`` table, schema migration 5): the columns, a record's
values in their order and back. Shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.runs.records import RunRecord, RunState

COLUMNS = (
    "run_id", "tenant", "kind", "name", "state", "request_id", "key_id", "created_at",
    "updated_at", "checkpoint", "result", "error", "owner", "lease_until", "steps", "pending",
)  # fmt: skip
SELECT = ", ".join(COLUMNS)
SAVED = ("state", "updated_at", "checkpoint", "result", "error", "owner", "lease_until", "steps",
         "pending")  # fmt: skip
"""The columns :meth:`~service.runs.store.RunStore.save_run` writes."""
PAGE_MAX = 1000


def values(r: RunRecord) -> tuple[object, ...]:
    """``r``'s values in :data:`COLUMNS` order."""
    return (
        r.run_id, r.tenant, r.kind, r.name, r.state.value, r.request_id, r.key_id, r.created_at,
        r.updated_at, r.checkpoint, r.result, r.error, r.owner, r.lease_until, r.steps,
        " ".join(r.pending),
    )  # fmt: skip


def saved_values(r: RunRecord) -> tuple[object, ...]:
    """``r``'s values in :data:`SAVED` order."""
    return (
        r.state.value, r.updated_at, r.checkpoint, r.result, r.error, r.owner, r.lease_until,
        r.steps, " ".join(r.pending),
    )  # fmt: skip


def record_of(row: Sequence[Any]) -> RunRecord:
    """The record of a row selected with :data:`SELECT`."""
    (run_id, tenant, kind, name, state, request_id, key_id, created, updated, checkpoint,
     result, error, owner, lease_until, steps, pending) = tuple(row)  # fmt: skip
    return RunRecord(
        run_id, tenant, kind, name, RunState(state), request_id, key_id, float(created),
        float(updated), bytes(checkpoint), bytes(result), error, owner, float(lease_until),
        int(steps), tuple(pending.split()),
    )  # fmt: skip
