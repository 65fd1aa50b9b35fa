"""The approval gate: a tool loop's calls that need a person's decision wait here.

For a step's pending calls the gate stores one approval each (expiring when the call's
deadline leaves no time to run the tool: ``deadline - margin_s``), tells the caller
(ApprovalRequiredEvent), audits the request, then polls the store (every ``poll_s``; any
replica's ApprovalService decides in the shared store) until every call is decided or the
approvals expire. At expiry the undecided ones are expired atomically (a late Approve gets
FAILED_PRECONDITION, never a call that runs after all). Approved calls run (with the
approver's edited arguments, checked again like the model's); denied and expired ones become
a DENIED result the model sees.

Parking a run past its caller's deadline (RunService.ResumeRun) is not built yet: within the
deadline is the whole wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, MutableMapping, Sequence
from typing import TYPE_CHECKING

from service.agents.spec import AgentSpec
from service.approvals.records import ApprovalRecord, ApprovalState, new_approval_id
from service.approvals.store import ApprovalStore
from service.context import current
from service.deadline import Deadline
from service.domain import ApprovalRequiredEvent, Event, ToolOutcome
from service.guards import GuardContext
from service.tools.guarding import check_call
from service.tools.results import ToolOutput, failed

if TYPE_CHECKING:
    from service.tools.loop import LoopState, Pending, ToolLoop

POLL_S = 0.25
MARGIN_S = 1.0


class Gate:
    """See the module docstring. One per process, built by the composition root."""

    def __init__(
        self,
        store: ApprovalStore,
        loop: ToolLoop,
        *,
        poll_s: float = POLL_S,
        margin_s: float = MARGIN_S,
    ) -> None:
        self._store = store
        self._loop = loop
        self._poll_s = poll_s
        self._margin_s = margin_s

    async def wait(
        self,
        agent: AgentSpec,
        state: LoopState,
        pending: Sequence[Pending],
        done: MutableMapping[str, ToolOutput],
        *,
        deadline: Deadline,
        guards: GuardContext,
    ) -> AsyncGenerator[Event, None]:
        """Ask, wait, then fill ``done`` with each pending call's output (see the module
        docstring). Yields the ApprovalRequiredEvents."""
        ctx = current()
        now = time.time()
        expires = now + max(0.0, deadline.remaining() - self._margin_s)
        records = [
            ApprovalRecord(
                new_approval_id(), ctx.tenant, state.run_id, agent.name, p.tool.name,
                p.call.id, p.arguments_json, p.reason, ApprovalState.PENDING, now, expires,
                request_id=state.request.request_id, tool_class=p.tool.policy.tool_class or "write",
                step=state.step,
            )
            for p in pending
        ]  # fmt: skip
        await self._store.insert_approvals(records)
        for record in records:
            await self._loop.audited(state, record.tool, "approval_requested", record.approval_id)
            yield ApprovalRequiredEvent(
                record.approval_id, state.run_id, record.tool_call_id, record.tool,
                record.arguments_json, record.reason, record.expires_at, state.step,
            )  # fmt: skip
        decided = await self._decisions(ctx.tenant, [r.approval_id for r in records], expires)
        for p, record in zip(pending, records, strict=True):
            final = decided.get(record.approval_id, record)
            if final.state is not ApprovalState.APPROVED:
                why = "no decision came in time" if final.state is not ApprovalState.DENIED else ""
                done[p.call.id] = failed(
                    ToolOutcome.DENIED,
                    f"a person did not approve this call{', ' if why else ''}{why}",
                )
                continue
            checked = await check_call(
                agent, guards, p.tool.parameters, final.arguments_to_run, self._loop.validators
            )
            state.verdicts.extend(checked.verdicts)
            if checked.problem:
                kind = ToolOutcome.BLOCKED if checked.blocked else ToolOutcome.INVALID_ARGUMENTS
                done[p.call.id] = failed(kind, checked.problem)
                continue
            done[p.call.id] = await self._loop.execute(
                agent, state, p.tool, checked.arguments, guards, deadline=deadline
            )

    async def _decisions(
        self, tenant: str, ids: list[str], expires: float
    ) -> dict[str, ApprovalRecord]:
        """Poll until every approval is decided or ``expires`` (unix seconds) passes; then
        expire the undecided ones and return every approval as it ended."""
        while True:
            found = await self._store.get_approvals(tenant, ids)
            if all(r.state is not ApprovalState.PENDING for r in found):
                return {r.approval_id: r for r in found}
            left = expires - time.time()
            if left <= 0:
                break
            await asyncio.sleep(min(self._poll_s, left))
        await self._store.expire_approvals(tenant, ids, time.time())
        return {r.approval_id: r for r in await self._store.get_approvals(tenant, ids)}
