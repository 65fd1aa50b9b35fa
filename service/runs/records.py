"""A run: one durable execution that can wait (README, Tools: "Runs").

A run is an agent's tool loop (kind ``agent``) or a workflow (kind ``workflow``). Plain
frozen records, no I/O: the stores keep them (:mod:`service.runs.store`).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass


class RunState(enum.Enum):
    RUNNING = "running"  # a call is running it now (``owner`` holds it until ``lease_until``)
    WAITING = "waiting"  # parked: it waits for approvals, or for a resume
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ENDED = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
KINDS = ("agent", "workflow")


def new_run_id() -> str:
    """``run_`` and 32 random hex digits."""
    return "run_" + secrets.token_hex(16)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored. ``checkpoint`` is what resuming needs (the kind's own encoding),
    ``result`` the final answer (the kind's own encoding), ``error`` a failed run's message.
    ``owner`` and ``lease_until`` (unix seconds) name the call that holds the run: another
    call may take it over only once the lease has passed (its holder died or parked it).
    ``pending`` lists the approval ids it waits for. Times are unix seconds."""

    run_id: str
    tenant: str
    kind: str
    name: str
    state: RunState
    request_id: str
    key_id: str
    created_at: float
    updated_at: float
    checkpoint: bytes = b""
    result: bytes = b""
    error: str = ""
    owner: str = ""
    lease_until: float = 0.0
    steps: int = 0
    pending: tuple[str, ...] = ()
