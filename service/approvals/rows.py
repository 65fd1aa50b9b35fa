"""An approval as a table row (the ``approvals`` table, schema migration 5): the columns, a
record's values in their order and back. Shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.approvals.records import ApprovalRecord, ApprovalState

COLUMNS = (
    "approval_id", "tenant", "run_id", "agent", "tool", "tool_call_id", "arguments_json",
    "reason", "state", "created_at", "expires_at", "request_id", "tool_class", "step",
    "decided_at", "approver", "comment", "edited_arguments_json",
)  # fmt: skip
SELECT = ", ".join(COLUMNS)
PAGE_MAX = 1000


def values(r: ApprovalRecord) -> tuple[object, ...]:
    """``r``'s values in :data:`COLUMNS` order."""
    return (
        r.approval_id, r.tenant, r.run_id, r.agent, r.tool, r.tool_call_id, r.arguments_json,
        r.reason, r.state.value, r.created_at, r.expires_at, r.request_id, r.tool_class,
        r.step, r.decided_at, r.approver, r.comment, r.edited_arguments_json,
    )  # fmt: skip


def record_of(row: Sequence[Any]) -> ApprovalRecord:
    """The record of a row selected with :data:`SELECT`."""
    (aid, tenant, run_id, agent, tool, call_id, args, reason, state, created, expires,
     request_id, tool_class, step, decided, approver, comment, edited) = tuple(row)  # fmt: skip
    return ApprovalRecord(
        aid, tenant, run_id, agent, tool, call_id, args, reason, ApprovalState(state),
        float(created), float(expires), request_id, tool_class, int(step), float(decided),
        approver, comment, edited,
    )  # fmt: skip


def state_filter(state: ApprovalState | None) -> str:
    """A WHERE clause on ``state`` with the placeholder ``{now}`` for the current time:
    a pending approval past its expiry counts as expired."""
    if state is None:
        return "{now} IS NOT NULL"  # every row (and the parameter typed)
    if state is ApprovalState.PENDING:
        return "state = 'pending' AND expires_at > {now}"
    if state is ApprovalState.EXPIRED:
        return "(state = 'expired' OR (state = 'pending' AND expires_at <= {now}))"
    return f"state = '{state.value}'"
