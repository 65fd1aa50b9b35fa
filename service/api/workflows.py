"""Workflows on the wire: their listing, their steps and their stream events (protobuf only
here and in convert.py)."""

from __future__ import annotations

from switchboard.v1 import agent_pb2 as pb

from service.api import convert
from service.workflows.events import (
    RunEvent,
    StepFinish,
    StepResult,
    StepStart,
    WorkflowAnswer,
)
from service.workflows.spec import WorkflowSpec

KINDS = {
    "sequential": pb.AGENT_KIND_SEQUENTIAL,
    "parallel": pb.AGENT_KIND_PARALLEL,
    "handoff": pb.AGENT_KIND_HANDOFF,
    "supervisor": pb.AGENT_KIND_SUPERVISOR,
}


def workflow_to_proto(spec: WorkflowSpec) -> pb.Agent:
    """A workflow as ListAgents and GetAgent list it: name, description, version, kind."""
    return pb.Agent(
        name=spec.name, description=spec.description, version=spec.version, kind=KINDS[spec.kind]
    )


def step_to_proto(result: StepResult) -> pb.WorkflowStep:
    return pb.WorkflowStep(
        step_id=result.step_id,
        agent=result.agent,
        text=result.text,
        usage=convert.usage_to_proto(result.usage),
        finish_reason=convert.finish_reason_to_proto(result.finish_reason),
        target=convert.target_to_proto(result.target) if result.target else None,
        attempts=result.attempts,
        error_reason=result.error.reason if result.error else "",
        error_message=result.error.message if result.error else "",
        tool_calls=[
            pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json)
            for c in result.tool_calls
        ],
    )


def event_to_proto(event: RunEvent) -> pb.StreamResponse:
    if isinstance(event, StepStart):
        start = pb.WorkflowStepStart(step_id=event.step_id, agent=event.agent)
        return pb.StreamResponse(workflow_step_start=start)
    if isinstance(event, StepFinish):
        finish = pb.WorkflowStepFinish(step=step_to_proto(event.result))
        return pb.StreamResponse(workflow_step_finish=finish)
    return convert.event_to_proto(event)


def answer_to_proto(answer: WorkflowAnswer) -> pb.InvokeResponse:
    response = convert.response_to_proto(answer.response)
    if not answer.response.target.name:
        response.ClearField("target")
    response.run_id = answer.run_id
    response.workflow_steps.extend(step_to_proto(s) for s in answer.steps)
    return response
