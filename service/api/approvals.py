"""ApprovalService: the tool calls that wait for a person's decision, and the decision.
The auth layer lets only keys with the ``approver`` scope in (:mod:`service.auth.scopes`);
the work is :class:`service.approvals.service.Approvals`'."""

from __future__ import annotations

import grpc
from switchboard.v1 import approval_pb2 as pb
from switchboard.v1 import approval_pb2_grpc as pb_grpc

from service.api import paging
from service.api.errors import abort
from service.api.structs import timestamp
from service.approvals.records import ApprovalRecord, ApprovalState
from service.approvals.service import Approvals
from service.context import current
from service.errors import FieldViolation, InvalidArgument

Context = grpc.aio.ServicerContext[object, object]

_STATES = {
    ApprovalState.PENDING: pb.Approval.STATE_PENDING,
    ApprovalState.APPROVED: pb.Approval.STATE_APPROVED,
    ApprovalState.DENIED: pb.Approval.STATE_DENIED,
    ApprovalState.EXPIRED: pb.Approval.STATE_EXPIRED,
}
_FILTERS = {v: k for k, v in _STATES.items()}


def approval_message(r: ApprovalRecord, now: float) -> pb.Approval:
    """``r`` as the contract's Approval (its state as of ``now``)."""
    message = pb.Approval(
        id=r.approval_id, run_id=r.run_id, agent=r.agent, tool=r.tool,
        tool_call_id=r.tool_call_id, arguments_json=r.arguments_json, reason=r.reason,
        state=_STATES[r.state_at(now)], create_time=timestamp(r.created_at),
        expire_time=timestamp(r.expires_at), approver=r.approver, comment=r.comment,
        edited_arguments_json=r.edited_arguments_json, request_id=r.request_id,
        tool_class=r.tool_class,
    )  # fmt: skip
    if r.decided_at:
        message.decide_time.CopyFrom(timestamp(r.decided_at))
    return message


def _required(value: str, name: str) -> None:
    if not value:
        raise InvalidArgument(f"{name}: required", [FieldViolation(name, "required")])


class ApprovalServicer(pb_grpc.ApprovalServiceServicer):
    def __init__(self, approvals: Approvals) -> None:
        self._approvals = approvals

    async def ListApprovals(  # noqa: N802
        self, request: pb.ListApprovalsRequest, context: Context
    ) -> pb.ListApprovalsResponse:
        try:
            size = paging.page_size(request.page_size)
            if request.state not in _FILTERS and request.state != pb.Approval.STATE_UNSPECIFIED:
                raise InvalidArgument(
                    "state: unknown value", [FieldViolation("state", "unknown value")]
                )
            found = await self._approvals.list(
                current().tenant,
                before=request.page_token,
                limit=size + 1,
                state=_FILTERS.get(request.state),
                run_id=request.run_id,
            )
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        page = found[:size]
        token = page[-1].approval_id if len(found) > size else ""
        now = self._approvals.now()
        return pb.ListApprovalsResponse(
            approvals=[approval_message(r, now) for r in page], next_page_token=token
        )

    async def GetApproval(  # noqa: N802
        self, request: pb.GetApprovalRequest, context: Context
    ) -> pb.GetApprovalResponse:
        try:
            _required(request.id, "id")
            found = await self._approvals.get(current().tenant, request.id)
        except Exception as exc:
            await abort(context, exc)
            raise
        return pb.GetApprovalResponse(approval=approval_message(found, self._approvals.now()))

    async def _decide(
        self, context: Context, approval_id: str, approve: bool, comment: str, arguments: str
    ) -> pb.Approval:
        try:
            _required(approval_id, "id")
            call = current()
            decided = await self._approvals.decide(
                call.tenant, call.key_id, call.request_id, approval_id, approve,
                comment=comment, arguments_json=arguments,
            )  # fmt: skip
        except Exception as exc:
            await abort(context, exc)
            raise
        return approval_message(decided, self._approvals.now())

    async def Approve(  # noqa: N802
        self, request: pb.ApproveRequest, context: Context
    ) -> pb.ApproveResponse:
        approval = await self._decide(
            context, request.id, True, request.comment, request.arguments_json
        )
        return pb.ApproveResponse(approval=approval)

    async def Deny(self, request: pb.DenyRequest, context: Context) -> pb.DenyResponse:  # noqa: N802
        approval = await self._decide(context, request.id, False, request.comment, "")
        return pb.DenyResponse(approval=approval)
