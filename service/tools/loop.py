"""The agent loop: model step → tool calls → policy → guards → run (in parallel) → results
→ next model step, until a final answer, ``max_steps`` or the deadline.

Each model step is one call of ``step`` (the runner's state pipeline and router: full
resilience, a budget reservation, a ledger line, priced and charged to the limits). The
events a caller sees: the first step's Start; every step's deltas; a ToolResultEvent per
call the server ran (and ApprovalRequiredEvent for those that wait); a StepFinish per step;
then the run's total usage and one Finish. A tool that fails, times out, is refused or
denied becomes an error result the model sees: it never fails the run.

Calls to caller tools end the run as without a loop (the server's calls of that step are
run first, so a session holds their results). Calls to tools the agent does not list are
refused and audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from service.agents.spec import AgentSpec
from service.context import current
from service.deadline import Deadline
from service.domain import (
    AgentRequest,
    Event,
    Finish,
    FinishReason,
    Fold,
    GuardVerdict,
    Message,
    Role,
    Start,
    StepFinish,
    StepTrace,
    TargetRef,
    TextPart,
    ToolCall,
    ToolOutcome,
    ToolResultEvent,
    Usage,
    UsageEvent,
)
from service.errors import FailedPrecondition, Reason
from service.guards import GuardContext
from service.guards.check import merge_verdicts
from service.guards.tools import check_arguments, check_tool_result
from service.runs.records import RunState
from service.state.records import AuditEntry
from service.tasks import task_group
from service.tools.host import ToolHost
from service.tools.policy import approval_reason
from service.tools.results import PREVIEW_CHARS, ToolOutput, failed, model_text, refusal
from service.tools.run_state import LoopState, Parked, Pending
from service.tools.spec import WRITE, ServerTool

if TYPE_CHECKING:
    from service.observability.tool_span import ToolSpans

log = logging.getLogger(__name__)

Step = Callable[[AgentRequest, AgentSpec, Deadline], AsyncGenerator[Event, None]]


class Audit(Protocol):
    async def audit(self, entry: AuditEntry) -> None: ...


class Approvals(Protocol):
    """What the loop needs of approvals and runs (:class:`service.approvals.gate.Gate`)."""

    def wait(
        self, agent: AgentSpec, state: LoopState, *, deadline: Deadline, guards: GuardContext
    ) -> AsyncGenerator[Event, None]:
        """Settle ``state.parked``: ask for the decisions (events: ApprovalRequiredEvent);
        then put each pending call's output in ``parked.outputs`` (run when approved,
        refused otherwise) and clear ``parked.pending``. A Finish event means the run
        parked (``state.run_id`` set): the rest waits for a resume."""
        ...

    async def save(
        self,
        state: LoopState,
        run_state: RunState,
        deadline: Deadline | None,
        *,
        result: bytes = b"",
        error: str = "",
    ) -> None:
        """Checkpoint a stored run (``state.run_id`` set)."""
        ...


@dataclass(slots=True)
class StepOutcome:
    """One model step's answer, folded."""

    message: Message
    reason: FinishReason
    usage: Usage
    target: TargetRef | None
    attempts: int
    verdicts: tuple[GuardVerdict, ...]


class ToolLoop:
    """See the module docstring. Built once by the composition root."""

    def __init__(
        self, host: ToolHost, audit: Audit | None = None, spans: ToolSpans | None = None
    ) -> None:
        """``spans`` makes each tool call's ``execute_tool`` span
        (:mod:`service.observability.tool_span`)."""
        self.host = host
        self._audit = audit
        self._spans = spans
        self.approvals: Approvals | None = None  # set by the composition root

    def offered(self, agent: AgentSpec) -> dict[str, ServerTool]:
        assert agent.loop is not None
        return self.host.tools_for(agent.loop)

    async def run(
        self,
        state: LoopState,
        agent: AgentSpec,
        step: Step,
        guards: GuardContext,
        deadline: Deadline,
    ) -> AsyncGenerator[Event, None]:
        """The run's events from ``state`` on: a new run, or a resumed one (its parked step
        is settled first). Raises what a model step raises (the run's steps so far are
        charged: each step records itself); a stored run is saved FAILED then."""
        assert agent.loop is not None
        try:
            if state.parked is not None:
                async for event in self._end_step(agent, state, guards, deadline):
                    yield event
                    if isinstance(event, Finish):
                        return
            while True:
                async for event in self._step(agent, state, step, guards, deadline):
                    yield event
                    if isinstance(event, Finish):
                        return
        except Exception as e:
            if state.run_id and self.approvals is not None and not _cancelled(e):
                await self.approvals.save(state, RunState.FAILED, None, error=str(e)[:500])
            raise

    async def _step(
        self,
        agent: AgentSpec,
        state: LoopState,
        step: Step,
        guards: GuardContext,
        deadline: Deadline,
    ) -> AsyncGenerator[Event, None]:
        """One model step and its calls."""
        assert agent.loop is not None
        caller_tools = {t.name for t in (*agent.tools, *state.request.tools)}
        server_tools = {n: t for n, t in self.offered(agent).items() if n not in caller_tools}
        offered = replace(
            agent,
            tools=agent.tools + tuple(t.as_tool() for t in server_tools.values() if t.enabled),
        )
        state.step += 1
        outcome: StepOutcome | None = None
        request = replace(
            state.request,
            messages=tuple(state.conversation),
            session_id="",
            cache=None,
        )
        async with aclosing(step(request, offered, deadline)) as events:
            fold = Fold()
            async for event in events:
                fold.add(event)
                if isinstance(event, Start):
                    state.target = state.target or event.target
                    if not state.started:
                        state.started = True
                        yield event
                elif isinstance(event, UsageEvent):
                    pass  # the step's own; the run's total comes at the end
                elif isinstance(event, Finish):
                    answer = fold.result()
                    outcome = StepOutcome(
                        answer.message,
                        event.reason,
                        answer.usage,
                        event.target,
                        event.attempts,
                        event.verdicts,
                    )
                else:
                    yield event
        assert outcome is not None
        state.verdicts.extend(outcome.verdicts)
        calls = outcome.message.tool_calls
        ends = (
            outcome.reason is not FinishReason.TOOL_CALLS
            or not calls
            or any(c.name in caller_tools for c in calls)
        )
        reason = outcome.reason
        if not ends and state.step >= agent.loop.max_steps:
            reason, ends = FinishReason.MAX_STEPS, True
        state.conversation.append(outcome.message)
        state.trace.append(
            StepTrace(
                state.step, reason, outcome.usage, outcome.target, outcome.attempts,
                outcome.message,
            )
        )  # fmt: skip
        state.parked = Parked(calls if reason is FinishReason.TOOL_CALLS else (), reason, ends)
        if state.parked.calls:
            await self._run_calls(agent, state, server_tools, guards, deadline=deadline)
        async for event in self._end_step(agent, state, guards, deadline):
            yield event

    async def _end_step(
        self, agent: AgentSpec, state: LoopState, guards: GuardContext, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """Settle the step's calls that wait for approvals, yield its results in call order
        and its StepFinish; then the run's Finish if it ends here (or parked)."""
        parked = state.parked
        assert parked is not None
        if parked.pending:
            if self.approvals is None:
                for p in parked.pending:
                    parked.outputs[p.call.id] = failed(
                        ToolOutcome.DENIED, "this call needs approval, and no approver is set up"
                    )
                parked.pending = []
            else:
                async with aclosing(
                    self.approvals.wait(agent, state, deadline=deadline, guards=guards)
                ) as decided:
                    async for event in decided:
                        if isinstance(event, Finish):  # parked: the rest waits for a resume
                            last = state.trace[-1]
                            state.trace[-1] = replace(
                                last,
                                reason=FinishReason.APPROVAL_PENDING,
                                approvals=tuple(parked.approvals),
                            )
                            yield StepFinish(
                                last.step, FinishReason.APPROVAL_PENDING, last.usage,
                                last.target, last.attempts,
                            )  # fmt: skip
                            yield UsageEvent(state.usage)
                            yield replace(
                                event,
                                attempts=state.attempts,
                                target=last.target,
                                verdicts=merge_verdicts(state.verdicts),
                            )
                            return
                        yield event
        results = []
        for call in parked.calls:
            output = parked.outputs.get(call.id)
            if output is not None:  # None: a caller tool's call: the caller answers it
                results.append(self.result_event(state, call, output))
                yield results[-1]
        last = replace(
            state.trace[-1],
            reason=parked.reason,
            results=tuple(results),
            approvals=tuple(parked.approvals),
        )
        state.trace[-1] = last
        state.parked = None
        yield StepFinish(last.step, parked.reason, last.usage, last.target, last.attempts)
        if parked.ends:
            if state.run_id and self.approvals is not None:
                await self.approvals.save(state, RunState.SUCCEEDED, None)
            yield UsageEvent(state.usage)
            yield Finish(
                parked.reason,
                state.attempts,
                False,
                last.target,
                merge_verdicts(state.verdicts),
                run_id=state.run_id,
            )
        elif state.run_id and self.approvals is not None:
            await self.approvals.save(state, RunState.RUNNING, deadline)

    async def _run_calls(
        self,
        agent: AgentSpec,
        state: LoopState,
        tools: Mapping[str, ServerTool],
        guards: GuardContext,
        *,
        deadline: Deadline,
    ) -> None:
        """Run the parked step's server calls that need no approval (in parallel, at most
        ``loop.parallel`` at once) into ``parked.outputs``; those that need approval go to
        ``parked.pending``."""
        assert agent.loop is not None
        assert state.parked is not None
        lane = asyncio.Semaphore(agent.loop.parallel)
        outputs = state.parked.outputs
        pending = state.parked.pending

        async def one(call: ToolCall) -> None:
            tool = tools.get(call.name)
            if tool is None or not tool.enabled:
                why = (
                    f"this agent may not call {call.name!r}"
                    if tool is None
                    else f"the tool is disabled: {tool.disabled_reason}"
                )
                outputs[call.id] = failed(ToolOutcome.NOT_ALLOWED, why)
                await self.audited(state, call.name, "not_allowed")
                return
            checked = await check_arguments(
                agent.guards, guards, tool.parameters, call.arguments_json
            )
            state.verdicts.extend(checked.verdicts)
            if checked.blocked is not None:
                kind = refusal(checked.blocked)
                outputs[call.id] = failed(kind, checked.problem)
                if kind is ToolOutcome.BLOCKED:
                    await self.audited(state, call.name, "blocked")
                return
            reason = approval_reason(tool, checked.arguments)
            if reason is not None:
                pending.append(Pending(call, tool.name, checked.arguments_json, reason))
                return
            async with lane:
                outputs[call.id] = await self.execute(
                    agent,
                    state,
                    tool,
                    checked.arguments,
                    guards,
                    deadline=deadline,
                    call_id=call.id,
                )

        async with task_group() as group:  # a call's Switchboard error, not a group
            for call in state.parked.calls:
                if call.name in tools or not _is_caller(agent, state, call.name):
                    group.create_task(one(call))
        order = {c.id: i for i, c in enumerate(state.parked.calls)}
        pending.sort(key=lambda p: order[p.call.id])

    def result_event(self, state: LoopState, call: ToolCall, output: ToolOutput) -> ToolResultEvent:
        """The call's result event; appends its TOOL message to the conversation."""
        state.conversation.append(
            Message(Role.TOOL, (TextPart(model_text(output)),), tool_call_id=call.id)
        )
        return ToolResultEvent(
            call.id,
            call.name,
            output.outcome,
            output.text[:PREVIEW_CHARS] if output.ok else "",
            output.size_bytes,
            "" if output.ok else output.text[:PREVIEW_CHARS],
            output.duration_s,
            state.step,
        )

    async def execute(
        self,
        agent: AgentSpec,
        state: LoopState,
        tool: ServerTool,
        arguments: Mapping[str, Any],
        guards: GuardContext,
        *,
        deadline: Deadline,
        call_id: str = "",
    ) -> ToolOutput:
        """Run one allowed, checked call (``call_id``: the model's id of it) and pass its
        result through the input guards."""
        run = self.host.run(tool, arguments, deadline)
        output = await (run if self._spans is None else self._spans.traced(tool, call_id, run))
        if tool.policy.tool_class == WRITE or not output.ok:
            await self.audited(state, tool.name, output.outcome.value)
        if not output.ok:
            return output
        if not agent.guards.input or not output.text:
            return output
        checked = await check_tool_result(agent.guards, guards, output.text)
        state.verdicts.extend(checked.verdicts)
        if checked.blocked is not None:
            verdict = checked.blocked
            return ToolOutput(
                ToolOutcome.BLOCKED,
                f"the result was blocked by guard {verdict.guard} ({verdict.category})",
                output.size_bytes,
                output.duration_s,
            )
        return replace(output, text=checked.text)

    async def audited(
        self, state: LoopState, tool: str, outcome: str, approval_id: str = "", detail: str = ""
    ) -> None:
        """An audit entry for a tool call (write tools, refusals, failures, approval
        requests; ``detail``: compact JSON). A store error here does not fail the run: the
        ledger's outbox keeps the entry (Ledger.audit)."""
        if self._audit is None:
            return
        ctx = current()
        resource = f"tool:{tool} {approval_id}".strip()[:200]
        entry = AuditEntry(
            time.time(), ctx.tenant, ctx.key_id, state.request.request_id,
            "tool_call", resource, outcome, entry_id=uuid.uuid4().hex, detail=detail,
        )  # fmt: skip
        try:
            await self._audit.audit(entry)
        except Exception:
            log.exception("audit of a tool call failed")


def _cancelled(e: Exception) -> bool:
    return isinstance(e, FailedPrecondition) and e.reason is Reason.RUN_CANCELLED


def _is_caller(agent: AgentSpec, state: LoopState, name: str) -> bool:
    return any(t.name == name for t in (*agent.tools, *state.request.tools))
