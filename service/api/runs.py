"""RunService: read, list, cancel and resume the caller's tenant's runs (agent tool loops
parked for approvals, workflows). Thin: the work is :class:`service.runs.service.Runs`'."""

from __future__ import annotations

from contextlib import aclosing

import grpc
from switchboard.v1 import agent_pb2 as agent_pb
from switchboard.v1 import run_pb2 as pb
from switchboard.v1 import run_pb2_grpc as pb_grpc

from service.api import convert, paging
from service.api import workflows as workflows_api
from service.api.errors import abort
from service.api.servicer import deadline_of
from service.api.structs import timestamp
from service.domain import Fold
from service.errors import InvalidArgument
from service.runs.records import RunRecord, RunState
from service.runs.service import Runs
from service.workflows.events import RunEvent, WorkflowFold
from service.workflows.events import StepFinish as WorkflowStepFinish
from service.workflows.events import StepStart as WorkflowStepStart

Context = grpc.aio.ServicerContext[object, object]

_STATES = {
    RunState.RUNNING: pb.Run.STATE_RUNNING,
    RunState.WAITING: pb.Run.STATE_WAITING,
    RunState.SUCCEEDED: pb.Run.STATE_SUCCEEDED,
    RunState.FAILED: pb.Run.STATE_FAILED,
    RunState.CANCELLED: pb.Run.STATE_CANCELLED,
}
_FILTERS = {v: k for k, v in _STATES.items()}


def run_message(r: RunRecord) -> pb.Run:
    """``r`` as the contract's Run."""
    return pb.Run(
        id=r.run_id, kind=r.kind, name=r.name, state=_STATES[r.state],
        create_time=timestamp(r.created_at), update_time=timestamp(r.updated_at),
        request_id=r.request_id, pending_approval_ids=r.pending, error=r.error, steps=r.steps,
    )  # fmt: skip


def _id(value: str) -> str:
    if not value:
        raise InvalidArgument.field("id", "the run id is required")
    return value


class RunServicer(pb_grpc.RunServiceServicer):
    def __init__(self, runs: Runs, default_deadline_s: float) -> None:
        self._runs = runs
        self._default_deadline_s = default_deadline_s

    async def GetRun(self, request: pb.GetRunRequest, context: Context) -> pb.GetRunResponse:  # noqa: N802
        try:
            run = await self._runs.get(_id(request.id))
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return pb.GetRunResponse(run=run_message(run))

    async def ListRuns(  # noqa: N802
        self, request: pb.ListRunsRequest, context: Context
    ) -> pb.ListRunsResponse:
        try:
            size = paging.page_size(request.page_size)
            after = paging.decode_token(request.page_token, "ListRuns")
            if request.state not in _FILTERS and request.state != pb.Run.STATE_UNSPECIFIED:
                raise InvalidArgument.field("state", "unknown value")
            if request.kind not in ("", "agent", "workflow"):
                raise InvalidArgument.field("kind", 'must be "agent", "workflow" or empty')
            page, position = await self._runs.list(
                after=after, limit=size, kind=request.kind, state=_FILTERS.get(request.state)
            )
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        token = paging.encode_token(position) if position else ""
        return pb.ListRunsResponse(runs=[run_message(r) for r in page], next_page_token=token)

    async def CancelRun(  # noqa: N802
        self, request: pb.CancelRunRequest, context: Context
    ) -> pb.CancelRunResponse:
        try:
            run = await self._runs.cancel(_id(request.id))
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return pb.CancelRunResponse(run=run_message(run))

    async def ResumeRun(  # noqa: N802
        self, request: pb.ResumeRunRequest, context: Context
    ) -> pb.ResumeRunResponse:
        try:
            run_id = _id(request.id)
            messages = convert.messages_from_proto(request.messages)
            deadline = deadline_of(context, self._default_deadline_s)
            async with aclosing(self._runs.resume(run_id, messages, deadline)) as resumed:
                events: list[RunEvent] = [event async for event in resumed]
            response = _answer(events)
            run = await self._runs.get(run_id)
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return pb.ResumeRunResponse(run=run_message(run), response=response)


def _answer(events: list[RunEvent]) -> agent_pb.InvokeResponse:
    """A run's events folded as Invoke answers: a workflow's (its steps) or an agent's."""
    if any(isinstance(e, WorkflowStepFinish) for e in events):
        steps = WorkflowFold()
        for event in events:
            steps.add(event)
        return workflows_api.answer_to_proto(steps.answer())
    fold = Fold()
    for event in events:
        if not isinstance(event, WorkflowStepStart | WorkflowStepFinish):
            fold.add(event)
    return convert.response_to_proto(fold.result())
