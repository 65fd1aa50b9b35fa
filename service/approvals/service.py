"""Approvals as a service: list, read and decide a tenant's approvals. The gRPC
ApprovalService (:mod:`service.api.approvals`) wraps it; the web console reaches it through
the Connect door. Every decision is audited (action ``Approve``/``Deny``, resource the
approval id, detail in the outcome) before the answer."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from service.approvals.records import ApprovalRecord, ApprovalState
from service.approvals.store import ApprovalStore
from service.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from service.state.records import AuditEntry

ArgumentsProblem = Callable[[str, str, Any], str | None]

COMMENT_MAX = 1000
ARGUMENTS_MAX = 1 << 20


class Audit(Protocol):
    async def audit(self, entry: AuditEntry) -> None: ...


class Approvals:
    """See the module docstring. ``tenant`` and ``key_id`` are the caller's (the approver)."""

    def __init__(
        self,
        store: ApprovalStore,
        audit: Audit,
        clock: Callable[[], float] = time.time,
        arguments_problem: ArgumentsProblem | None = None,
    ) -> None:
        """``arguments_problem(agent, tool, arguments)``: why edited arguments do not fit the
        tool's schema now, or None (:meth:`service.agents.runner.Runner.tool_arguments_problem`)."""
        self._store = store
        self._audit = audit
        self._clock = clock
        self._arguments_problem = arguments_problem

    def now(self) -> float:
        return self._clock()

    async def get(self, tenant: str, approval_id: str) -> ApprovalRecord:
        """Raises NotFound when the tenant has no approval ``approval_id``."""
        found = await self._store.get_approval(tenant, approval_id) if approval_id else None
        if found is None:
            raise NotFound(f"no approval {approval_id!r}")
        return found

    async def list(
        self,
        tenant: str,
        *,
        before: str,
        limit: int,
        state: ApprovalState | None,
        run_id: str,
    ) -> list[ApprovalRecord]:
        """Newest first; ``before`` is the last id of the previous page."""
        return await self._store.list_approvals(
            tenant, before=before, limit=limit, state=state, run_id=run_id, now=self._clock()
        )

    async def decide(
        self,
        tenant: str,
        key_id: str,
        request_id: str,
        approval_id: str,
        approve: bool,
        *,
        comment: str = "",
        arguments_json: str = "",
    ) -> ApprovalRecord:
        """Approve (with ``arguments_json`` edited, if given) or deny. Raises InvalidArgument
        (a comment over 1000 characters; edited arguments that are not a JSON object),
        NotFound, FailedPrecondition (already decided or expired)."""
        if len(comment) > COMMENT_MAX:
            raise InvalidArgument(
                f"comment: at most {COMMENT_MAX} characters",
                [FieldViolation("comment", f"at most {COMMENT_MAX} characters")],
            )
        if arguments_json:
            arguments = _parsed_object(arguments_json)
            if approve and self._arguments_problem is not None:
                await self._check_schema(tenant, approval_id, arguments)
        now = self._clock()
        state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
        decided = await self._store.decide_approval(
            tenant, approval_id, state, approver=key_id or "auth-off", comment=comment,
            edited_arguments_json=arguments_json, now=now,
        )  # fmt: skip
        if decided is None:
            current = await self.get(tenant, approval_id)
            raise FailedPrecondition(
                f"approval {approval_id!r} is already {current.state_at(now).value}"
            )
        edited = " edited" if arguments_json else ""
        await self._audit.audit(
            AuditEntry(
                now, tenant, key_id, request_id, "Approve" if approve else "Deny",
                f"approval:{approval_id}", f"{state.value}{edited}",
                entry_id=uuid.uuid4().hex, detail=_detail(decided),
            )
        )  # fmt: skip
        return decided

    async def _check_schema(self, tenant: str, approval_id: str, arguments: Any) -> None:
        """Raises InvalidArgument (a BadRequest on ``arguments_json``) when the edited
        arguments do not fit the tool's schema, NotFound for an unknown approval."""
        assert self._arguments_problem is not None
        record = await self.get(tenant, approval_id)
        problem = self._arguments_problem(record.agent, record.tool, arguments)
        if problem is not None:
            raise InvalidArgument(
                f"arguments_json: does not fit the schema of {record.tool!r}: {problem}",
                [FieldViolation("arguments_json", f"does not fit the tool's schema: {problem}")],
            )


def _detail(r: ApprovalRecord) -> str:
    """The decision's audit detail (compact JSON): the tool, the run, the comment, and the
    arguments as asked and as edited (edits only)."""
    detail: dict[str, str] = {"tool": r.tool, "run_id": r.run_id}
    if r.comment:
        detail["comment"] = r.comment
    if r.edited_arguments_json:
        detail["arguments_json"] = r.arguments_json
        detail["edited_arguments_json"] = r.edited_arguments_json
    return json.dumps(detail, separators=(",", ":"), ensure_ascii=False)


def _parsed_object(text: str) -> dict[str, Any]:
    """``text`` parsed, when it is a JSON object of at most ARGUMENTS_MAX characters.

    Raises:
        InvalidArgument: what is wrong with it (a BadRequest on ``arguments_json``).
    """
    problem, value = "", None
    if len(text) > ARGUMENTS_MAX:
        problem = f"at most {ARGUMENTS_MAX} characters"
    else:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: deep nesting
            problem = "is not valid JSON"
        else:
            if not isinstance(value, dict):
                problem = "must be a JSON object"
    if problem or not isinstance(value, dict):
        raise InvalidArgument(
            f"arguments_json: {problem}", [FieldViolation("arguments_json", problem)]
        )
    return value
