"""An approval: one tool call waiting for (or given) a person's decision. Plain records."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass


class ApprovalState(enum.Enum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"  # nobody decided in time: treated as denied


def new_approval_id() -> str:
    """``apr_`` and 32 random hex digits."""
    return "apr_" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One approval as stored. ``arguments_json`` is what the model asked (after the
    tool_call guards); ``edited_arguments_json`` what the approver set instead (empty: the
    model's). Times are unix seconds; ``decided_at`` is 0 while pending."""

    approval_id: str
    tenant: str
    run_id: str
    agent: str
    tool: str
    tool_call_id: str
    arguments_json: str
    reason: str
    state: ApprovalState
    created_at: float
    expires_at: float
    request_id: str = ""
    tool_class: str = "write"
    step: int = 0
    decided_at: float = 0.0
    approver: str = ""
    comment: str = ""
    edited_arguments_json: str = ""

    def state_at(self, now: float) -> ApprovalState:
        """The state as of ``now``: a pending approval past its expiry is expired."""
        if self.state is ApprovalState.PENDING and now >= self.expires_at:
            return ApprovalState.EXPIRED
        return self.state

    @property
    def arguments_to_run(self) -> str:
        """The arguments an approved call runs with: the approver's, else the model's."""
        return self.edited_arguments_json or self.arguments_json
