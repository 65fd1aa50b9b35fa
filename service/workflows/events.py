"""What a workflow run yields besides an agent's events, and what a step's checkpoint holds.

A workflow's stream is one ``Start`` (with the run id), then per step a :class:`StepStart`,
the step's deltas (``TextDelta``/``ToolCallDelta`` carrying its ``step_id``) and a
:class:`StepFinish`, then the total ``UsageEvent`` and one ``Finish``. The answer is the
text of the last step to finish (the last step, the merge, the agent handed to last, the
supervisor's last turn).

Checkpoints and the durable event log are JSON (DBOS stores them): :class:`StepResult`
converts to and from plain values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from service.domain import (
    AgentResponse,
    Event,
    Finish,
    FinishReason,
    Message,
    Role,
    Start,
    TargetRef,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)


@dataclass(frozen=True, slots=True)
class StepStart:
    step_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class StepError:
    """Why a step failed: the error's kind (``InvalidArgument``…), reason and message."""

    kind: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StepResult:
    """One finished step: what its checkpoint stores and a caller is shown."""

    step_id: str
    agent: str
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    finish_reason: FinishReason = FinishReason.UNSPECIFIED
    target: TargetRef | None = None
    attempts: int = 0
    error: StepError | None = None  # None: the step answered
    run_id: str = ""  # the agent run holding the step's tool loop, when it parked
    approvals: tuple[str, ...] = ()  # the approvals a parked step waits for
    deadline_at: float = 0.0  # a branch that waited for a person: the deadline it renewed

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def parked(self) -> bool:
        """The step's agent parked its tool loop for approvals (a person decides)."""
        return self.finish_reason is FinishReason.APPROVAL_PENDING and bool(self.run_id)

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        value["finish_reason"] = self.finish_reason.value
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> StepResult:
        target = value.get("target")
        error = value.get("error")
        return cls(
            step_id=value["step_id"],
            agent=value["agent"],
            text=value.get("text", ""),
            tool_calls=tuple(ToolCall(**c) for c in value.get("tool_calls", ())),
            usage=Usage(**value.get("usage", {})),
            finish_reason=FinishReason(value.get("finish_reason", "unspecified")),
            target=TargetRef(**target) if target else None,
            attempts=value.get("attempts", 0),
            error=StepError(**error) if error else None,
            run_id=value.get("run_id", ""),
            approvals=tuple(value.get("approvals", ())),
            deadline_at=value.get("deadline_at", 0.0),
        )


@dataclass(frozen=True, slots=True)
class StepFinish:
    result: StepResult


RunEvent = Event | StepStart | StepFinish


@dataclass(frozen=True, slots=True)
class WorkflowAnswer:
    """A finished run as Invoke returns it: the answer, every step, the run id."""

    response: AgentResponse
    steps: tuple[StepResult, ...]
    run_id: str


def replayed(result: StepResult) -> list[RunEvent]:
    """A finished step as a reattached caller sees it: start, its whole text, finish."""
    events: list[RunEvent] = [StepStart(result.step_id, result.agent)]
    if result.text:
        events.append(TextDelta(result.text, step_id=result.step_id))
    for index, call in enumerate(result.tool_calls):
        events.append(
            ToolCallDelta(index, call.id, call.name, call.arguments_json, step_id=result.step_id)
        )
    events.append(StepFinish(result))
    return events


class WorkflowFold:
    """A run's events folded into its answer: the last step's, every step, the run id (the
    Finish's reason when it is not the last step's: a run parked for approvals)."""

    def __init__(self) -> None:
        self.start: Start | None = None
        self.steps: list[StepResult] = []
        self.finish: Finish | None = None

    def add(self, event: RunEvent) -> None:
        if isinstance(event, Start):
            self.start = event
        elif isinstance(event, StepFinish):
            self.steps.append(event.result)
        elif isinstance(event, Finish):
            self.finish = event

    def answer(self) -> WorkflowAnswer:
        start, steps = self.start, self.steps
        assert start is not None
        final = steps[-1] if steps else StepResult("", "")
        message = Message(
            Role.ASSISTANT, (TextPart(final.text),) if final.text else (), final.tool_calls
        )
        reason = final.finish_reason
        if self.finish is not None and self.finish.reason is FinishReason.APPROVAL_PENDING:
            reason = self.finish.reason
        response = AgentResponse(
            request_id=start.request_id,
            agent=start.agent,
            agent_version=start.agent_version,
            target=final.target or TargetRef("", "", ""),
            message=message,
            finish_reason=reason,
            usage=total_usage(steps),
            attempts=sum(s.attempts for s in steps),
            run_id=start.run_id,
        )
        return WorkflowAnswer(response, tuple(steps), start.run_id)


def total_usage(results: list[StepResult]) -> Usage:
    """Every step's usage added up (priced: ``cost_usd`` summed too)."""
    sums: dict[str, Any] = {}
    for result in results:
        for name, value in asdict(result.usage).items():
            if isinstance(value, bool):
                sums[name] = sums.get(name, False) or value
            else:
                sums[name] = sums.get(name, 0) + value
    return Usage(**sums) if sums else Usage()


__all__ = [
    "RunEvent",
    "Start",
    "StepError",
    "StepFinish",
    "StepResult",
    "StepStart",
    "UsageEvent",
    "WorkflowAnswer",
    "WorkflowFold",
    "replayed",
    "total_usage",
]
