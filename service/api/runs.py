"""RunService: the caller's tenant's runs, of every kind, in one place (run.proto).

Each kind of run (``workflow`` here; ``agent`` for the tools loop's parked runs) is a
:class:`RunKind`: it finds, lists, cancels and resumes its own runs. This servicer asks each
kind in turn for a run id (run ids are unique across kinds) and merges their lists, newest
first. Another tenant's run is NOT_FOUND, as an unknown id is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Protocol

import grpc
from switchboard.v1 import agent_pb2, run_pb2
from switchboard.v1 import run_pb2_grpc as pb_grpc

from service.api import paging
from service.api.errors import abort
from service.api.structs import timestamp_of
from service.echo import echo
from service.errors import InvalidArgument, NotFound, Reason
from service.runs.records import RunRecord, RunState

Context = grpc.aio.ServicerContext[object, object]

STATES = {
    RunState.RUNNING: run_pb2.Run.STATE_RUNNING,
    RunState.WAITING: run_pb2.Run.STATE_WAITING,
    RunState.SUCCEEDED: run_pb2.Run.STATE_SUCCEEDED,
    RunState.FAILED: run_pb2.Run.STATE_FAILED,
    RunState.CANCELLED: run_pb2.Run.STATE_CANCELLED,
}
_FROM_PROTO = {value: state for state, value in STATES.items()}


class RunKind(Protocol):
    """One kind of run, as RunService serves it. Every method reads the caller's tenant
    from the call context."""

    async def get(self, run_id: str) -> RunRecord | None:
        """The tenant's run ``run_id`` of this kind, or None."""
        ...

    async def page(
        self, *, before: tuple[float, str] | None, limit: int, state: RunState | None
    ) -> list[RunRecord]:
        """Up to ``limit`` runs newest first, after ``before`` ((created_at, run_id) of the
        last run of the previous page), in ``state`` if given."""
        ...

    async def cancel(self, run_id: str) -> RunRecord:
        """Cancel it. Raises NotFound, FailedPrecondition (it already ended)."""
        ...

    async def resume(
        self, run_id: str, messages: Sequence[agent_pb2.Message]
    ) -> tuple[RunRecord, agent_pb2.InvokeResponse]:
        """Continue it and wait for its answer (within the call's deadline)."""
        ...


def run_to_proto(record: RunRecord) -> run_pb2.Run:
    return run_pb2.Run(
        id=record.run_id,
        kind=record.kind,
        name=record.name,
        state=STATES[record.state],
        create_time=timestamp_of(record.created_at),
        update_time=timestamp_of(record.updated_at),
        request_id=record.request_id,
        pending_approval_ids=list(record.pending),
        error=record.error,
        steps=record.steps,
    )


def _token(record: RunRecord) -> str:
    return paging.encode_token(f"{record.created_at!r} {record.run_id}")


def _position(token: str) -> tuple[float, str] | None:
    """Raises InvalidArgument for a token no ListRuns response gave."""
    after = paging.decode_token(token, "ListRuns")
    if not after:
        return None
    created, _, run_id = after.partition(" ")
    try:
        return float(created), run_id
    except ValueError:
        raise InvalidArgument.field(
            "page_token", "not a token from a previous ListRuns response"
        ) from None


def _required_id(run_id: str) -> str:
    if not run_id:
        raise InvalidArgument.field("id", "the run id is required")
    return run_id


class RunServicer(pb_grpc.RunServiceServicer):
    def __init__(self, kinds: Mapping[str, RunKind]) -> None:
        """``kinds``: kind name (``workflow``, ``agent``) → its runs."""
        self._kinds = dict(kinds)

    async def _find(self, run_id: str) -> tuple[RunKind, RunRecord]:
        for kind in self._kinds.values():
            record = await kind.get(run_id)
            if record is not None:
                return kind, record
        raise NotFound(f"no run {echo(run_id)}", reason=Reason.RUN_NOT_FOUND)

    async def GetRun(  # noqa: N802
        self, request: run_pb2.GetRunRequest, context: Context
    ) -> run_pb2.GetRunResponse:
        try:
            _, record = await self._find(_required_id(request.id))
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return run_pb2.GetRunResponse(run=run_to_proto(record))

    async def ListRuns(  # noqa: N802
        self, request: run_pb2.ListRunsRequest, context: Context
    ) -> run_pb2.ListRunsResponse:
        try:
            size = paging.page_size(request.page_size)
            before = _position(request.page_token)
            if request.kind and request.kind not in self._kinds:
                known = ", ".join(sorted(self._kinds)) or "none"
                raise InvalidArgument.field("kind", f"not a kind of run here (kinds: {known})")
            state = _FROM_PROTO.get(request.state)
            kinds = [k for name, k in self._kinds.items() if request.kind in ("", name)]
            pages = await asyncio.gather(
                *(k.page(before=before, limit=size + 1, state=state) for k in kinds)
            )
            runs = sorted(
                (r for page in pages for r in page),
                key=lambda r: (r.created_at, r.run_id),
                reverse=True,
            )
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        shown = runs[:size]
        token = _token(shown[-1]) if len(runs) > size else ""
        return run_pb2.ListRunsResponse(
            runs=[run_to_proto(r) for r in shown], next_page_token=token
        )

    async def CancelRun(  # noqa: N802
        self, request: run_pb2.CancelRunRequest, context: Context
    ) -> run_pb2.CancelRunResponse:
        try:
            kind, _ = await self._find(_required_id(request.id))
            record = await kind.cancel(request.id)
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return run_pb2.CancelRunResponse(run=run_to_proto(record))

    async def ResumeRun(  # noqa: N802
        self, request: run_pb2.ResumeRunRequest, context: Context
    ) -> run_pb2.ResumeRunResponse:
        try:
            kind, _ = await self._find(_required_id(request.id))
            record, response = await kind.resume(request.id, list(request.messages))
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return run_pb2.ResumeRunResponse(run=run_to_proto(record), response=response)
