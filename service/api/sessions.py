"""SessionService: thin — protobuf in, tenant-scoped session call, protobuf out.

A session whose agent the caller's key may not call is treated as missing (NOT_FOUND, left
out of lists)."""

from __future__ import annotations

import contextlib
import time
import uuid

import grpc
from switchboard.v1 import session_pb2 as pb
from switchboard.v1 import session_pb2_grpc as pb_grpc

from service.api import convert
from service.api.errors import abort
from service.api.paging import decode_token, encode_token, page_size
from service.api.structs import timestamp
from service.context import current
from service.errors import SwitchboardError
from service.sessions import Sessions
from service.state.records import AuditEntry, SessionInfo
from service.state.stores import AuditLog

Context = grpc.aio.ServicerContext[object, object]


def session_to_proto(info: SessionInfo) -> pb.Session:
    return pb.Session(
        id=info.session_id,
        agent=info.agent,
        create_time=timestamp(info.created_at),
        update_time=timestamp(info.updated_at),
        turn_count=info.turn_count,
    )


class SessionServicer(pb_grpc.SessionServiceServicer):
    def __init__(self, sessions: Sessions, audit: AuditLog) -> None:
        self._sessions = sessions
        self._audit = audit

    async def GetSession(  # noqa: N802
        self, request: pb.GetSessionRequest, context: Context
    ) -> pb.GetSessionResponse:
        try:
            ctx = current()
            info, messages = await self._sessions.get(ctx.tenant, request.id, ctx.agents)
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        session = session_to_proto(info)
        session.messages.extend(convert.message_to_proto(m) for m in messages)
        return pb.GetSessionResponse(session=session)

    async def ListSessions(  # noqa: N802
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        try:
            size = page_size(request.page_size)
            after = decode_token(request.page_token, "ListSessions")
            ctx = current()
            found = await self._sessions.list(ctx.tenant, after, size + 1, ctx.agents)
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        page = found[:size]
        token = encode_token(page[-1].session_id) if len(found) > size else ""
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in page], next_page_token=token
        )

    async def DeleteSession(  # noqa: N802
        self, request: pb.DeleteSessionRequest, context: Context
    ) -> pb.DeleteSessionResponse:
        ctx = current()
        try:
            await self._sessions.delete(ctx.tenant, request.id, ctx.agents)
        except Exception as exc:  # mapped to a status in one place
            await self._audited(request.id, _outcome(exc))
            await abort(context, exc)
            raise
        await self._audited(request.id, "ok")
        return pb.DeleteSessionResponse()

    async def _audited(self, session_id: str, outcome: str) -> None:
        ctx = current()
        entry = AuditEntry(
            time.time(),
            ctx.tenant,
            ctx.key_id,
            ctx.request_id,
            "DeleteSession",
            f"session:{session_id[:128]}",
            outcome,
            entry_id=uuid.uuid4().hex,  # an outbox replay writes it once
        )
        # Written before the caller hears back. A store error here is not the caller's
        # concern when the deletion itself succeeded or failed on its own.
        with contextlib.suppress(SwitchboardError):
            await self._audit.audit(entry)


def _outcome(exc: Exception) -> str:
    return type(exc).__name__ if isinstance(exc, SwitchboardError) else "Internal"
