"""The body of every workflow run: what DBOS executes, and re-executes after a crash.

A run's input (:class:`RunInput`) carries everything it needs: the workflow's definition as
it was when the run began, the caller's tenant and key, the messages and the deadline. Each
agent call is one DBOS step (:meth:`RunContext.agent_step`): its answer is checkpointed
before the run moves on, so a re-executed run replays it instead of calling again. A
parallel branch is a child workflow (its own steps, run at once, cancelled with its
parent). The durable event log (DBOS stream ``events``) gets each step's start and finish;
live events (deltas included) go to :class:`~service.workflows.live.LiveRuns`.

A step that fails is checkpointed as failed (its outcome, like an answer); a step cut off
by a crash or a cancellation has no checkpoint and runs again when the run resumes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import AbstractContextManager, aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dbos import DBOS

from service import context as call_context
from service.deadline import Deadline
from service.domain import (
    AgentRequest,
    ApprovalRequiredEvent,
    Event,
    FinishReason,
    Fold,
    Message,
    Role,
    Start,
    TargetRef,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
)
from service.errors import QuotaViolation, Reason, ResourceExhausted, SwitchboardError
from service.sessions import codec
from service.workflows import attributes
from service.workflows.events import RunEvent, StepError, StepFinish, StepResult, StepStart
from service.workflows.live import LiveRuns
from service.workflows.spec import WorkflowSpec

EVENTS = "events"  # the DBOS stream of a run's durable events
MEMORY = "memory"  # the DBOS event holding the run's memory
RUN_FUNCTION = "switchboard.run"
BRANCH_FUNCTION = "switchboard.branch"

AgentStream = Callable[[AgentRequest, Deadline], Any]  # Runner.stream


class StepApprovals(Protocol):
    """What a step parked for approvals needs (:mod:`service.workflows.approvals`)."""

    async def decided(self, tenant: str, ids: Sequence[str]) -> None:
        """Return once every approval of ``ids`` is decided (or expired)."""
        ...

    def resume(self, run_id: str, deadline: Deadline) -> AsyncGenerator[RunEvent, None]:
        """The parked agent run ``run_id`` resumed (RunService.ResumeRun's events)."""
        ...

    def holding_as(self, holder: str) -> AbstractContextManager[None]:
        """Resume (claim and save) runs as ``holder`` within the block."""
        ...


@dataclass(frozen=True, slots=True)
class RunInput:
    """What a run was started with: stored by DBOS as the workflow's input (JSON)."""

    run_id: str
    spec: WorkflowSpec
    tenant: str
    key_id: str
    request_id: str
    messages: tuple[Message, ...]
    deadline_at: float  # wall clock (time.time()): a resumed run keeps its deadline
    metadata: dict[str, str] = field(default_factory=dict)
    depth: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "spec": self.spec.to_json(),
            "tenant": self.tenant,
            "key_id": self.key_id,
            "request_id": self.request_id,
            "messages": codec.encode(self.messages),
            "deadline_at": self.deadline_at,
            "metadata": self.metadata,
            "depth": self.depth,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RunInput:
        return cls(
            run_id=value["run_id"],
            spec=WorkflowSpec.from_json(value["spec"]),
            tenant=value["tenant"],
            key_id=value["key_id"],
            request_id=value["request_id"],
            messages=codec.decode(value["messages"]),
            deadline_at=value["deadline_at"],
            metadata=dict(value.get("metadata", {})),
            depth=value.get("depth", 1),
        )

    def deadline(self) -> Deadline:
        return Deadline.after(self.deadline_at - time.time())

    @property
    def input_text(self) -> str:
        """The caller's last user message (the template's ``{input}``)."""
        for message in reversed(self.messages):
            if message.role is Role.USER:
                return message.text
        return ""


class StepFailed(Exception):
    def __init__(self, result: StepResult) -> None:
        super().__init__(result.error.message if result.error else "step failed")
        self.result = result


def limit(spec: WorkflowSpec, what: str, value: int) -> ResourceExhausted:
    """The error of a run that would pass its ``what`` limit (``value``)."""
    return ResourceExhausted(
        f"workflow {spec.name!r} would pass its limit {what} ({value})",
        violations=[QuotaViolation(f"workflow:{spec.name}", f"{what} {value}")],
        reason=Reason.WORKFLOW_LIMIT,
    ).about(workflow=spec.name)


class RunContext:
    """One execution of a run's body: its steps so far, its memory, its live channel."""

    def __init__(
        self,
        run: RunInput,
        stream: AgentStream,
        live: LiveRuns,
        approvals: StepApprovals | None = None,
    ) -> None:
        self.run = run
        self.spec = run.spec
        self._stream = stream
        self._live = live
        self._approvals = approvals
        self.deadline_at = run.deadline_at  # renewed after a wait for a person
        self.results: list[StepResult] = []
        self.memory: dict[str, str] = {}
        self.steps_taken = 0

    def count_step(self, steps: int = 1) -> None:
        """Raises ResourceExhausted (WORKFLOW_LIMIT) when ``steps`` more pass max_steps."""
        self.steps_taken += steps
        limits = self.spec.definition.limits
        if self.steps_taken > limits.max_steps:
            raise limit(self.spec, "max_steps", limits.max_steps)

    def publish(self, event: Event | StepStart | StepFinish) -> None:
        self._live.publish(self.run.run_id, event)

    async def remember(self, key: str | None, text: str) -> None:
        """Write the run's memory entry ``key`` (checkpointed as a DBOS event)."""
        if key is None:
            return
        self.memory[key] = text
        await DBOS.set_event_async(MEMORY, dict(self.memory))

    def with_memory(self, messages: tuple[Message, ...], read: bool) -> tuple[Message, ...]:
        """``messages`` with the run's memory first, as a system message, when allowed."""
        if not read or not self.memory:
            return messages
        lines = "\n".join(f"- {key}: {value}" for key, value in self.memory.items())
        note = Message(Role.SYSTEM, (TextPart(f"Shared memory of this run:\n{lines}"),))
        return (note, *messages)

    async def log(self, event: StepStart | StepFinish) -> None:
        """Publish ``event`` live and append it to the run's durable log (a finish also
        counts the run's steps, for RunService)."""
        self.publish(event)
        if isinstance(event, StepStart):
            value: dict[str, Any] = {"start": {"step_id": event.step_id, "agent": event.agent}}
            await DBOS.write_stream_async(EVENTS, value)
            return
        await DBOS.write_stream_async(EVENTS, {"finish": event.result.to_json()})
        # UPDATED: DBOS's own updated time is whole seconds on SQLite.
        steps = {attributes.STEPS: len(self.results), attributes.UPDATED: time.time()}
        await DBOS.update_workflow_attributes_async(self.run.run_id, steps, merge=True)

    async def agent_step(
        self,
        step_id: str,
        agent: str,
        messages: tuple[Message, ...],
        *,
        logged: bool = True,
        tools: tuple[Tool, ...] = (),
    ) -> StepResult:
        """Run ``agent`` on ``messages`` as the checkpointed step ``step_id``: replayed from
        its checkpoint when it already ran. ``logged``: write its start and finish to the
        durable log, and publish them live (a branch's parent does both itself). ``tools``:
        the workflow's own tools offered to the agent (handoffs, delegations)."""
        if logged:
            await self.log(StepStart(step_id, agent))

        async def call() -> dict[str, Any]:
            return (await self._call(step_id, agent, messages, tools)).to_json()

        value = await DBOS.run_step_async({"name": f"agent:{step_id}"}, call)
        result = StepResult.from_json(value)
        turn = 0
        while result.parked and self._approvals is not None:
            result = await self._approved(step_id, result, turn)
            turn += 1
        self.results.append(result)
        if logged:
            await self.log(StepFinish(result))
        return result

    def deadline(self) -> Deadline:
        return Deadline.after(self.deadline_at - time.time())

    async def _approved(self, step_id: str, parked: StepResult, turn: int) -> StepResult:
        """Wait durably for the decisions a parked step needs, then resume its agent run as
        a step of its own (checkpointed: a finished model or tool call never runs again).
        While it waits the run is WAITING (the attribute ``waiting_key(step_id)``); after it
        the run has its whole ``timeout_s`` again (a person's time is not the run's)."""
        assert self._approvals is not None
        approvals, run_id = self._approvals, self.run.run_id
        key = attributes.waiting_key(step_id)
        await DBOS.update_workflow_attributes_async(
            run_id, {key: list(parked.approvals)}, merge=True
        )

        async def wait() -> float:
            await approvals.decided(self.run.tenant, parked.approvals)
            return time.time()

        decided_at = await DBOS.run_step_async({"name": f"approval:{step_id}:{turn}"}, wait)
        await DBOS.update_workflow_attributes_async(run_id, {key: []}, merge=True)
        self.deadline_at = float(decided_at) + self.spec.definition.timeout_s

        async def resume() -> dict[str, Any]:
            # Held as this step: re-executed after a crash, it takes the agent run back.
            with approvals.holding_as(f"workflow:{run_id}:{step_id}"):
                events = approvals.resume(parked.run_id, self.deadline())
                return (await self._fold(step_id, parked.agent, events)).to_json()

        value = await DBOS.run_step_async({"name": f"agent:{step_id}:resume:{turn}"}, resume)
        return StepResult.from_json(value)

    async def _call(
        self, step_id: str, agent: str, messages: tuple[Message, ...], tools: tuple[Tool, ...]
    ) -> StepResult:
        """One agent call through the runner (guards, budgets, ledger, routing), its deltas
        published live. A call that needs approval parks at once (the run waits for the
        decision itself: :meth:`_approved`)."""
        request = AgentRequest(
            agent=agent,
            messages=messages,
            request_id=f"{self.run.request_id}.{step_id}"[:128],
            metadata=self.run.metadata,
            workflow_tools=tools,
            park_for_approval=self._approvals is not None,
        )
        return await self._fold(step_id, agent, self._stream(request, self.deadline()))

    async def _fold(
        self, step_id: str, agent: str, stream: AsyncGenerator[RunEvent, None]
    ) -> StepResult:
        """An agent's events as the step's result, its deltas and approval requests
        published live. A domain error is the step's outcome, not an exception."""
        fold = Fold()
        try:
            async with aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, StepStart | StepFinish):
                        continue  # not an agent's (a workflow's step events)
                    fold.add(event)
                    if isinstance(event, TextDelta | ToolCallDelta):
                        self.publish(replace(event, step_id=step_id))
                    elif isinstance(event, ApprovalRequiredEvent):
                        self.publish(event)
            answer = fold.result()
            parked = answer.finish_reason is FinishReason.APPROVAL_PENDING and answer.steps
        except SwitchboardError as exc:
            usage = fold.usage
            error = StepError(type(exc).__name__, str(exc.reason), exc.message)
            return StepResult(step_id, agent, usage=usage, error=error)
        return StepResult(
            step_id=step_id,
            agent=agent,
            text=answer.message.text,
            tool_calls=answer.message.tool_calls,
            usage=answer.usage,
            finish_reason=answer.finish_reason,
            target=answer.target,
            attempts=answer.attempts,
            run_id=answer.run_id,
            approvals=tuple(a.approval_id for a in answer.steps[-1].approvals) if parked else (),
        )


def bound_context(run: RunInput) -> call_context.CallContext:
    """The call context a run's steps execute in: the caller's tenant and key (a resumed
    run has no call of its own). The workflow was allowed; so are its steps' agents."""
    return call_context.CallContext(
        request_id=run.request_id, tenant=run.tenant, key_id=run.key_id, agents=None
    )


def started(run: RunInput) -> Start:
    """The ``Start`` event of a run's stream (a workflow has no single target)."""
    return Start(run.request_id, run.spec.name, run.spec.version, TargetRef("", "", ""), run.run_id)
