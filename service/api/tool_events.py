"""Protobuf for a tool loop's events and trace: tool results, approvals, step boundaries."""

from __future__ import annotations

from switchboard.v1 import agent_pb2 as pb

from service.api.structs import duration, timestamp
from service.domain import (
    ApprovalRequiredEvent,
    FinishReason,
    StepFinish,
    StepTrace,
    TargetRef,
    ToolOutcome,
    ToolResultEvent,
    Usage,
)

FINISH = {
    FinishReason.UNSPECIFIED: pb.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.APPROVAL_PENDING: pb.FINISH_REASON_APPROVAL_PENDING,
    FinishReason.MAX_STEPS: pb.FINISH_REASON_MAX_STEPS,
}
_OUTCOMES = {
    ToolOutcome.OK: pb.TOOL_OUTCOME_OK,
    ToolOutcome.ERROR: pb.TOOL_OUTCOME_ERROR,
    ToolOutcome.TIMEOUT: pb.TOOL_OUTCOME_TIMEOUT,
    ToolOutcome.TOO_LARGE: pb.TOOL_OUTCOME_TOO_LARGE,
    ToolOutcome.NOT_ALLOWED: pb.TOOL_OUTCOME_NOT_ALLOWED,
    ToolOutcome.INVALID_ARGUMENTS: pb.TOOL_OUTCOME_INVALID_ARGUMENTS,
    ToolOutcome.BLOCKED: pb.TOOL_OUTCOME_BLOCKED,
    ToolOutcome.DENIED: pb.TOOL_OUTCOME_DENIED,
}


def _target(target: TargetRef | None) -> pb.Target | None:
    if target is None:
        return None
    return pb.Target(name=target.name, provider=target.provider, model=target.model)


def _usage(usage: Usage) -> pb.Usage:
    from service.api.convert import usage_to_proto  # noqa: PLC0415 (convert imports this module)

    return usage_to_proto(usage)


def tool_result_to_proto(event: ToolResultEvent) -> pb.ToolResult:
    return pb.ToolResult(
        tool_call_id=event.tool_call_id,
        name=event.name,
        outcome=_OUTCOMES[event.outcome],
        preview=event.preview,
        size_bytes=event.size_bytes,
        error=event.error,
        duration=duration(event.duration_s),
        step=event.step,
    )


def approval_required_to_proto(event: ApprovalRequiredEvent) -> pb.ApprovalRequired:
    return pb.ApprovalRequired(
        approval_id=event.approval_id,
        run_id=event.run_id,
        tool_call_id=event.tool_call_id,
        tool=event.tool,
        arguments_json=event.arguments_json,
        reason=event.reason,
        expire_time=timestamp(event.expires_at),
        step=event.step,
    )


def step_finish_to_proto(event: StepFinish) -> pb.StepFinish:
    return pb.StepFinish(
        step=event.step,
        finish_reason=FINISH[event.reason],
        usage=_usage(event.usage),
        target=_target(event.target),
        attempts=event.attempts,
    )


def step_to_proto(step: StepTrace) -> pb.Step:
    return pb.Step(
        step=step.step,
        finish_reason=FINISH[step.reason],
        usage=_usage(step.usage),
        target=_target(step.target),
        attempts=step.attempts,
        tool_calls=[
            pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json)
            for c in step.message.tool_calls
        ],
        tool_results=[tool_result_to_proto(r) for r in step.results],
        approvals=[approval_required_to_proto(a) for a in step.approvals],
    )
