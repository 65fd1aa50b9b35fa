"""A tool loop's state as data: what a run carries from step to step, and a step parked
for approvals. Plain records; :mod:`service.tools.checkpoint` encodes them for the run store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.domain import (
    AgentRequest,
    ApprovalRequiredEvent,
    FinishReason,
    GuardVerdict,
    Message,
    StepTrace,
    TargetRef,
    ToolCall,
    Usage,
)
from service.routing.tab import total
from service.tools.results import ToolOutput


@dataclass(slots=True)
class Pending:
    """A call that waits for a person's decision: ``tool`` names the server tool (looked
    up in the config current when it runs), ``arguments_json`` as checked."""

    call: ToolCall
    tool: str
    arguments_json: str
    reason: str
    approval_id: str = ""


@dataclass(slots=True)
class Parked:
    """A model step whose calls wait for approvals. ``calls`` are the step's calls in the
    model's order, ``reason`` the step's finish reason, ``ends`` whether the run ends after
    the step (caller tools among the calls), ``outputs`` the outputs of calls already run
    (by call id), ``pending`` the calls that wait, ``approvals`` the events that asked."""

    calls: tuple[ToolCall, ...]
    reason: FinishReason
    ends: bool
    outputs: dict[str, ToolOutput] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    approvals: list[ApprovalRequiredEvent] = field(default_factory=list)


@dataclass(slots=True)
class LoopState:
    """A run in progress. ``conversation`` is the history the next model step sees (a
    session's history first: ``history_len`` messages), ``trace`` the steps taken,
    ``parked`` the step waiting for approvals (the trace's last), ``run_id`` set once the
    run is stored (its first approval)."""

    request: AgentRequest
    conversation: list[Message]
    history_len: int
    step: int = 0
    trace: list[StepTrace] = field(default_factory=list)
    verdicts: list[GuardVerdict] = field(default_factory=list)
    run_id: str = ""
    started: bool = False
    target: TargetRef | None = None
    parked: Parked | None = None

    @property
    def usage(self) -> Usage:
        return total(s.usage for s in self.trace)

    @property
    def attempts(self) -> int:
        return sum(s.attempts for s in self.trace)
