"""The approval gate: a tool loop's calls that need a person's decision wait here, and the
run parks durably when its caller's deadline would pass first.

For a step's pending calls the gate stores the run (its first approval makes it a run:
``run_<hex>``) with its checkpoint and one approval each, in one transaction; tells the
caller (ApprovalRequiredEvent); audits the request; then polls the store (every ``poll_s``;
any replica's ApprovalService decides in the shared store) until every call is decided or
the caller's deadline is ``margin_s`` away. Decided in time: approved calls run (with the
approver's edited arguments, checked again like the model's); denied and expired ones become
a DENIED result the model sees. Not decided in time: the run is saved WAITING (no owner) and
the loop ends the call with FINISH_REASON_APPROVAL_PENDING and the run id; any replica
resumes it later (RunService.ResumeRun, Stream with ``run_id``), after a restart too.
Approvals expire ``approval_ttl_s`` after they were asked (then: denied).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING

from service.agents.spec import AgentSpec
from service.approvals.records import ApprovalRecord, ApprovalState, new_approval_id
from service.approvals.store import ApprovalStore
from service.context import current
from service.deadline import Deadline
from service.domain import ApprovalRequiredEvent, Event, Finish, FinishReason, ToolOutcome
from service.errors import FailedPrecondition, PermissionDenied, Reason
from service.guards import GuardContext
from service.guards.tools import check_arguments
from service.runs.records import RunRecord, RunState, new_run_id
from service.runs.store import RunStore
from service.tools import checkpoint
from service.tools.results import failed, refusal
from service.tools.run_state import LoopState

if TYPE_CHECKING:
    from service.tools.loop import ToolLoop

POLL_S = 0.25
MARGIN_S = 1.0
APPROVAL_TTL_S = 86_400.0
LEASE_MARGIN_S = 5.0
APPROVAL_WAIT_S = 366 * 86_400.0  # past any approval's expiry: a bound, not a timeout


# Who holds the runs this task claims and saves, when not this process: a workflow's step
# that resumes its agent run holds it as that step (:func:`holding_as`).
_HOLDER: ContextVar[str] = ContextVar("switchboard_run_holder", default="")


@contextlib.contextmanager
def holding_as(holder: str) -> Iterator[None]:
    """Within this block this task claims and saves runs as ``holder``, not as the process:
    a holder that is the same after a crash (a workflow step, which DBOS runs on one
    executor at a time) takes its run back at once instead of waiting for its lease."""
    token = _HOLDER.set(holder)
    try:
        yield
    finally:
        _HOLDER.reset(token)


def owner_id() -> str:
    """This process's name as a run's holder: host, pid and a random part (a restarted
    process with the same pid is another holder)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Gate:
    """See the module docstring. One per process, built by the composition root."""

    def __init__(
        self,
        store: ApprovalStore,
        runs: RunStore,
        loop: ToolLoop,
        *,
        poll_s: float = POLL_S,
        margin_s: float = MARGIN_S,
        approval_ttl_s: float = APPROVAL_TTL_S,
        owner: str = "",
    ) -> None:
        self._store = store
        self._runs = runs
        self._loop = loop
        self._poll_s = poll_s
        self._margin_s = margin_s
        self._ttl_s = approval_ttl_s
        self._owner = owner or owner_id()

    @property
    def owner(self) -> str:
        """Who holds the runs this call claims and saves: this process, or the holder of
        :func:`holding_as`."""
        return _HOLDER.get() or self._owner

    def lease_until(self, deadline: Deadline) -> float:
        """Unix seconds until which a call with ``deadline`` holds a run."""
        return time.time() + deadline.remaining() + LEASE_MARGIN_S

    async def wait(
        self, agent: AgentSpec, state: LoopState, *, deadline: Deadline, guards: GuardContext
    ) -> AsyncGenerator[Event, None]:
        """Settle ``state.parked`` (see the module docstring): yields the new
        ApprovalRequiredEvents, then fills ``parked.outputs`` and clears ``parked.pending``;
        or yields a Finish(APPROVAL_PENDING) when the run parked.

        Raises:
            FailedPrecondition: the run was cancelled meanwhile (RUN_CANCELLED).
        """
        parked = state.parked
        assert parked is not None
        ctx = current()
        now = time.time()
        new = [p for p in parked.pending if not p.approval_id]
        if new:
            if not state.run_id:
                state.run_id = new_run_id()
                await self._runs.create_run(
                    RunRecord(
                        state.run_id, ctx.tenant, "agent", agent.name, RunState.RUNNING,
                        state.request.request_id, ctx.key_id, now, now, owner=self.owner,
                        lease_until=self.lease_until(deadline),
                    )
                )  # fmt: skip
            tools = self._loop.offered(agent)
            records = []
            for p in new:
                p.approval_id = new_approval_id()
                tool = tools.get(p.tool)
                ttl = tool.policy.approval_ttl_s if tool else self._ttl_s
                records.append(
                    ApprovalRecord(
                        p.approval_id, ctx.tenant, state.run_id, agent.name, p.tool, p.call.id,
                        p.arguments_json, p.reason, ApprovalState.PENDING, now, now + ttl,
                        request_id=state.request.request_id,
                        tool_class=(tool.policy.tool_class if tool else "") or "write",
                        step=state.step,
                    )
                )  # fmt: skip
                parked.approvals.append(
                    ApprovalRequiredEvent(
                        p.approval_id, state.run_id, p.call.id, p.tool, p.arguments_json,
                        p.reason, now + ttl, state.step,
                    )
                )  # fmt: skip
            await self.save(state, RunState.RUNNING, deadline, approvals=records)
            for record, event in zip(records, parked.approvals[-len(records) :], strict=True):
                detail = {"run_id": state.run_id, "reason": record.reason,
                          "arguments_json": record.arguments_json}  # fmt: skip
                await self._loop.audited(
                    state, record.tool, "approval_requested", record.approval_id,
                    json.dumps(detail, separators=(",", ":"), ensure_ascii=False),
                )  # fmt: skip
                yield event
        ids = [p.approval_id for p in parked.pending]
        # A workflow's step parks at once: the workflow waits durably (:meth:`decided`).
        wait = deadline if not state.request.park_for_approval else Deadline.after(0.0)
        decided = await self._decisions(ctx.tenant, ids, wait)
        if decided is None:
            await self.save(state, RunState.WAITING, None)
            yield Finish(FinishReason.APPROVAL_PENDING, run_id=state.run_id)
            return
        tools = self._loop.offered(agent)
        for p in parked.pending:
            final = decided[p.approval_id]
            tool = tools.get(p.tool)
            if final.state is not ApprovalState.APPROVED:
                why = "no decision came in time" if final.state is not ApprovalState.DENIED else ""
                if tool is not None and tool.policy.on_deny == "fail":
                    raise PermissionDenied(
                        f"a person did not approve the call of {p.tool!r}{': ' if why else ''}"
                        f"{why} (the tool's on_deny is fail)",
                        reason=Reason.APPROVAL_DENIED,
                    ).about(run_id=state.run_id, tool=p.tool, approval_id=p.approval_id)
                parked.outputs[p.call.id] = failed(
                    ToolOutcome.DENIED,
                    f"a person did not approve this call{', ' if why else ''}{why}",
                )
                continue
            if tool is None or not tool.enabled:
                parked.outputs[p.call.id] = failed(
                    ToolOutcome.NOT_ALLOWED, f"the tool {p.tool!r} is no longer offered"
                )
                continue
            checked = await check_arguments(
                agent.guards, guards, tool.parameters, final.arguments_to_run
            )
            state.verdicts.extend(checked.verdicts)
            if checked.blocked is not None:
                parked.outputs[p.call.id] = failed(refusal(checked.blocked), checked.problem)
                continue
            parked.outputs[p.call.id] = await self._loop.execute(
                agent, state, tool, checked.arguments, guards, deadline=deadline, call_id=p.call.id
            )
        parked.pending = []

    async def save(
        self,
        state: LoopState,
        run_state: RunState,
        deadline: Deadline | None,
        *,
        approvals: Sequence[ApprovalRecord] = (),
        result: bytes = b"",
        error: str = "",
    ) -> None:
        """Write the run's checkpoint (and new ``approvals``) as its holder. ``deadline``
        None (parked, ended): the run is left unheld.

        Raises:
            FailedPrecondition: this process no longer holds the run (cancelled: RUN_CANCELLED).
        """
        now = time.time()
        held = deadline is not None
        pending = tuple(p.approval_id for p in state.parked.pending) if state.parked else ()
        record = RunRecord(
            state.run_id, current().tenant, "agent", "", run_state, "", "", now, now,
            checkpoint=checkpoint.encode(state), result=result, error=error,
            owner=self.owner if held else "",
            lease_until=self.lease_until(deadline) if deadline is not None else 0.0,
            steps=state.step, pending=pending if run_state is RunState.WAITING else (),
        )  # fmt: skip
        if not await self._runs.save_run(record, owner=self.owner, approvals=approvals):
            raise FailedPrecondition(
                f"run {state.run_id} was cancelled, or another call took it over",
                reason=Reason.RUN_CANCELLED,
            ).about(run_id=state.run_id)

    async def decided(self, tenant: str, ids: Sequence[str]) -> None:
        """Return once every approval of ``ids`` is decided or expired (expiring the late
        ones for good): what a workflow's step parked for approvals waits for."""
        await self._decisions(tenant, list(ids), Deadline.after(APPROVAL_WAIT_S))

    async def _decisions(
        self, tenant: str, ids: list[str], deadline: Deadline
    ) -> dict[str, ApprovalRecord] | None:
        """Poll until every approval is decided (or expired: then expire it for good, so a
        late Approve gets FAILED_PRECONDITION); every approval as it ended, or None when the
        deadline would pass first."""
        while True:
            now = time.time()
            found = await self._store.get_approvals(tenant, ids)
            late = [r.approval_id for r in found if r.state_at(now) is ApprovalState.EXPIRED
                    and r.state is ApprovalState.PENDING]  # fmt: skip
            if late:
                await self._store.expire_approvals(tenant, late, now)
                found = await self._store.get_approvals(tenant, ids)
            if len(found) == len(ids) and all(r.state is not ApprovalState.PENDING for r in found):
                return {r.approval_id: r for r in found}
            left = deadline.remaining() - self._margin_s
            if left <= 0:
                return None
            await asyncio.sleep(min(self._poll_s, left))
