"""Workflows, called like agents: start a run, follow it, reattach to it, cancel it.

A run is one DBOS workflow whose id is the run id (``run_<32 hex>``). ``stream`` starts a
run and relays its live events; ``invoke`` folds them. A caller that goes away cancels the
run, and with it every branch (DBOS cancels child workflows with their parent); a server
that stops leaves its runs pending, for a restart or another replica to resume. An Invoke
that names a ``request_id`` gets a run id derived from it, so a retry after a crash attaches
to the same run instead of starting another. :meth:`attach` follows any run of the caller's
tenant from its durable log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from dbos import DBOS, DBOSContextSetAuth, SetWorkflowAttributes, SetWorkflowID
from dbos import error as dbos_errors

from service import context as call_context
from service import errors
from service.deadline import Deadline
from service.domain import (
    AgentRequest,
    Finish,
)
from service.echo import echo
from service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    Unavailable,
)
from service.sessions import codec
from service.workflows import attributes, parking
from service.workflows.delegation import handoff, supervisor
from service.workflows.engine import Engine
from service.workflows.events import (
    RunEvent,
    StepError,
    StepFinish,
    StepResult,
    StepStart,
    UsageEvent,
    WorkflowAnswer,
    WorkflowFold,
    replayed,
    total_usage,
)
from service.workflows.execute import (
    BRANCH_FUNCTION,
    EVENTS,
    RUN_FUNCTION,
    AgentStream,
    RunContext,
    RunInput,
    StepApprovals,
    StepFailed,
    bound_context,
    started,
)
from service.workflows.ids import new_run_id
from service.workflows.live import DONE, LiveRuns
from service.workflows.patterns import parallel, sequential
from service.workflows.records import ACTIVE, is_run_of, tag
from service.workflows.spec import WorkflowSpec


class Workflows:
    """See the module docstring. Built once by the composition root."""

    def __init__(
        self,
        specs: Callable[[], dict[str, WorkflowSpec]],
        stream: AgentStream,
        engine: Engine,
        live: LiveRuns | None = None,
        *,
        descriptions: Callable[[], Mapping[str, str]] = dict,
        approvals: StepApprovals | None = None,
    ) -> None:
        """``specs``: the current config's workflows (read per call: reloads swap them);
        ``stream``: the runner's agent call (each step is one); ``descriptions``: the
        current agents' descriptions by name (a handoff's or supervisor's tools say them)."""
        self._specs = specs
        self._descriptions = descriptions
        self._stream = stream
        self._approvals = approvals  # None: a step parked for approvals ends parked
        self.engine = engine
        self.live = live or LiveRuns()
        self.stopping = False  # set by the server's drain: runs cut off stay resumable
        self._run = engine.register(RUN_FUNCTION, self._run_body)
        self._branch = engine.register(BRANCH_FUNCTION, self._branch_body)

    def has(self, name: str) -> bool:
        return name in self._specs()

    def specs(self) -> list[WorkflowSpec]:
        """The workflows the caller may call, by name."""
        may_call = call_context.current().may_call
        return sorted((w for w in self._specs().values() if may_call(w.name)), key=_name)

    def spec(self, name: str) -> WorkflowSpec:
        """Raises PermissionDenied (checked first) or NotFound."""
        if not call_context.current().may_call(name):
            raise PermissionDenied(
                f"this API key may not call workflow {echo(name)}",
                reason=Reason.AGENT_NOT_ALLOWED,
            ).about(workflow=name)
        spec = self._specs().get(name)
        if spec is None:
            raise NotFound(f"no workflow named {echo(name)}", reason=Reason.AGENT_NOT_FOUND)
        return spec

    # ---- the caller's side -------------------------------------------------------------

    def stream(
        self, request: AgentRequest, deadline: Deadline, *, run_id: str = ""
    ) -> AsyncGenerator[RunEvent, None]:
        """Start a run of the workflow ``request.agent`` and yield its events (see
        :mod:`service.workflows.events`). ``run_id``: the run's id (default: a new one); a
        run with that id that exists already is followed, not started again.

        Raises (before the first event): NotFound, PermissionDenied, InvalidArgument (a
        session, caller tools or parameters: a workflow's agents have their own). Then the
        failed step's error, or ResourceExhausted (WORKFLOW_LIMIT)."""
        spec = self.spec(request.agent)
        _check(request)
        ctx = call_context.current()
        run = RunInput(
            run_id=run_id or new_run_id(),
            spec=spec,
            tenant=ctx.tenant,
            key_id=ctx.key_id,
            request_id=request.request_id,
            messages=request.messages,
            deadline_at=time.time() + min(deadline.remaining(), spec.definition.timeout_s),
            metadata=dict(request.metadata),
        )
        return self._start(run, deadline)

    async def invoke(
        self, request: AgentRequest, deadline: Deadline, *, run_id: str = ""
    ) -> WorkflowAnswer:
        """The run's events folded: the answer (the last step's), every step, the run id."""
        return await _folded(self.stream(request, deadline, run_id=run_id))

    async def owns(self, run_id: str) -> bool:
        """Whether ``run_id`` is a workflow run of the caller's tenant."""
        status = await DBOS.get_workflow_status_async(run_id)
        return status is not None and is_run_of(status, call_context.current().tenant)

    async def _start(self, run: RunInput, deadline: Deadline) -> AsyncGenerator[RunEvent, None]:
        existing = await DBOS.get_workflow_status_async(run.run_id)
        if existing is not None:
            if not is_run_of(existing, run.tenant):
                raise NotFound(f"no run {echo(run.run_id)}", reason=Reason.RUN_NOT_FOUND)
            if existing.status == "CANCELLED":
                await resume_cancelled(run.run_id)
            async with aclosing(self._replay(run, deadline)) as events:
                async for event in events:
                    yield event
            return
        queue = self.live.listen(run.run_id)
        finished = False
        try:
            attributes = tag(run.tenant, run.spec.name, run.request_id, run.key_id)
            # The tenant is also the run's DBOS user: listing filters on it (both backends).
            with (
                DBOSContextSetAuth(run.tenant, None),
                SetWorkflowID(run.run_id),
                SetWorkflowAttributes(attributes),
            ):
                handle: Any = await DBOS.start_workflow_async(self._run, run.to_json())
            yield started(run)
            outcome = asyncio.ensure_future(_result(handle))
            steps: list[StepResult] = []
            try:
                while True:
                    item = asyncio.ensure_future(_next(queue, outcome))
                    try:
                        parked = await parking.parked_first(item, run.run_id, deadline)
                    finally:
                        item.cancel()  # done, unless this caller is cancelled
                    if parked:
                        # The run waits for a person: this call ends, the run goes on.
                        for event in parking.parked_ending(run.run_id, steps):
                            yield event
                        finished = True
                        return
                    if item.result() is None or item.result() is DONE:
                        break
                    event = item.result()
                    assert not isinstance(event, type(DONE))
                    if isinstance(event, StepFinish):
                        steps.append(event.result)
                    yield event
                result = await outcome
            finally:
                outcome.cancel()
            for event in _ending(result):
                yield event
            finished = True
        finally:
            self.live.leave(run.run_id, queue)
            if not finished and not self.stopping:
                await self.cancel(run.run_id)

    async def attach(
        self, run_id: str, deadline: Deadline | None = None
    ) -> AsyncGenerator[RunEvent, None]:
        """Follow the run ``run_id`` of the caller's tenant from its durable log: each
        finished step whole, then the end. Leaving does not cancel it.

        Raises:
            NotFound: no such run for this tenant.
        """
        status = await DBOS.get_workflow_status_async(run_id)
        if status is None or not is_run_of(status, call_context.current().tenant):
            raise NotFound(f"no run {echo(run_id)}", reason=Reason.RUN_NOT_FOUND)
        run = RunInput.from_json(_input_of(status))
        async with aclosing(self._replay(run, deadline)) as events:
            async for event in events:
                yield event

    async def _replay(
        self, run: RunInput, deadline: Deadline | None
    ) -> AsyncGenerator[RunEvent, None]:
        """The run's durable log, then its end; or, when it waits for a person as
        ``deadline`` nears, the parked ending (:mod:`service.workflows.parking`)."""
        yield started(run)
        steps: list[StepResult] = []
        reader = DBOS.read_stream_async(run.run_id, EVENTS)
        try:
            while True:
                value = asyncio.ensure_future(anext(reader, None))
                if await parking.parked_first(value, run.run_id, deadline):
                    for event in parking.parked_ending(run.run_id, steps):
                        yield event
                    return
                logged: dict[str, Any] | None = value.result()
                if logged is None:
                    break
                if "start" in logged:
                    yield StepStart(**logged["start"])
                    continue
                # A finished step: its whole text, then its finish.
                steps.append(StepResult.from_json(logged["finish"]))
                for event in replayed(steps[-1])[1:]:
                    yield event
        finally:
            with contextlib.suppress(Exception):
                await reader.aclose()
        handle: Any = await DBOS.retrieve_workflow_async(run.run_id)
        outcome = asyncio.ensure_future(_result(handle))
        if await parking.parked_first(outcome, run.run_id, deadline):
            for event in parking.parked_ending(run.run_id, steps):
                yield event
            return
        for event in _ending(outcome.result()):
            yield event

    async def halt(self) -> None:
        """Stop every run executing here without cancelling it (a server stopping): each
        stays pending, to be resumed from its last finished step."""
        self.stopping = True
        tasks = self.live.cancel_all()
        if tasks:
            await asyncio.wait(tasks)

    async def cancel(self, run_id: str) -> None:
        """Cancel ``run_id`` and its branches: durably (a step in flight elsewhere stops at
        its next checkpoint) and at once for the tasks running here. (DBOS cancels only the
        workflow named: the branches, its children, are cancelled here one by one.)"""
        await DBOS.cancel_workflow_async(run_id)
        children = await DBOS.list_workflows_async(
            parent_workflow_id=run_id, status=list(ACTIVE), load_input=False, load_output=False
        )
        for child in children:
            await DBOS.cancel_workflow_async(child.workflow_id)
        self.live.cancel(run_id)

    # ---- the run's side (what DBOS executes) ----------------------------------------------

    async def _run_body(self, payload: dict[str, Any]) -> dict[str, Any]:
        run = RunInput.from_json(payload)
        token = call_context.bind(bound_context(run))
        task = asyncio.current_task()
        if task is not None:
            self.live.executing(run.run_id, task)
        ctx = RunContext(run, self._stream, self.live, self._approvals)
        try:
            if run.spec.kind == "sequential":
                final = await sequential(ctx)
            elif run.spec.kind == "parallel":
                final = await parallel(ctx, self._start_branch)
            elif run.spec.kind == "handoff":
                final = await handoff(ctx, dict(self._descriptions()))
            else:
                described = dict(self._descriptions())
                final = await supervisor(ctx, self._start_branch, described)
            outcome: dict[str, Any] = {"final": final.step_id}
        except StepFailed as failed:
            outcome = {"error": _error_json(failed.result.error)}
        except errors.SwitchboardError as exc:
            outcome = {"error": {"kind": type(exc).__name__, "reason": str(exc.reason),
                                 "message": exc.message}}  # fmt: skip
        finally:
            call_context.reset(token)
        if "error" in outcome:  # RunService shows it failed (service.workflows.records)
            error = {attributes.ERROR: outcome["error"]["message"]}
            await DBOS.update_workflow_attributes_async(run.run_id, error, merge=True)
        outcome["steps"] = [r.to_json() for r in ctx.results]
        self.live.publish(run.run_id, DONE)
        return outcome

    async def _start_branch(self, payload: dict[str, Any]) -> Any:
        return await DBOS.start_workflow_async(self._branch, payload)

    async def _branch_body(self, payload: dict[str, Any]) -> dict[str, Any]:
        run = RunInput.from_json(payload["run"])
        token = call_context.bind(bound_context(run))
        task = asyncio.current_task()
        if task is not None:
            self.live.executing(run.run_id, task)
        try:
            ctx = RunContext(run, self._stream, self.live, self._approvals)
            messages = codec.decode(payload["messages"])
            result = await ctx.agent_step(
                payload["step_id"], payload["agent"], messages, logged=False
            )
        finally:
            call_context.reset(token)
        if ctx.deadline_at != run.deadline_at:  # it waited for a person (RunContext._approved)
            result = replace(result, deadline_at=ctx.deadline_at)
        return result.to_json()


async def _next(queue: asyncio.Queue[Any], outcome: asyncio.Future[Any]) -> Any:
    """The next live item, or None once the run's outcome is in and nothing is queued."""
    if not queue.empty():
        return queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait({getter, outcome}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getter.done():
            getter.cancel()
    if getter.done() and not getter.cancelled():
        return getter.result()
    return queue.get_nowait() if not queue.empty() else None


def _ending(outcome: dict[str, Any]) -> list[RunEvent]:
    """The run's last events: total usage and Finish; or the failed step's error raised."""
    steps = [StepResult.from_json(s) for s in outcome.get("steps", [])]
    if "error" in outcome:
        raise _error_from(outcome["error"])
    final = next(s for s in reversed(steps) if s.step_id == outcome["final"])
    attempts = sum(s.attempts for s in steps)
    return [
        UsageEvent(total_usage(steps)),
        Finish(final.finish_reason, attempts, False, final.target),
    ]


async def _result(handle: Any) -> dict[str, Any]:
    """The run's outcome once it ends.

    Raises:
        FailedPrecondition: the run was cancelled (reason RUN_CANCELLED).
    """
    this = asyncio.current_task()
    try:
        result: dict[str, Any] = await handle.get_result()
    except dbos_errors.DBOSAwaitedWorkflowCancelledError:
        raise _cancelled(handle.workflow_id) from None
    except asyncio.CancelledError:
        if this is not None and this.cancelling():
            raise  # this caller is being cancelled
        # The run's own task here was cancelled under it: by CancelRun, or a server stopping.
        status = await DBOS.get_workflow_status_async(handle.workflow_id)
        if status is not None and status.status == "CANCELLED":
            raise _cancelled(handle.workflow_id) from None
        raise Unavailable(
            f"run {handle.workflow_id} was cut off here (the server is stopping); it resumes: "
            "follow it with Stream and its run_id"
        ) from None
    return result


async def resume_cancelled(run_id: str) -> None:
    """Resume a cancelled run from its last finished step, with its cancelled branches
    (:meth:`Workflows.cancel` cancels them with it; DBOS resumes only the run named)."""
    children = await DBOS.list_workflows_async(
        parent_workflow_id=run_id, status="CANCELLED", load_input=False, load_output=False
    )
    for child in children:
        await DBOS.resume_workflow_async(child.workflow_id)
    await DBOS.resume_workflow_async(run_id)


def _cancelled(run_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"run {run_id} was cancelled (RunService.ResumeRun continues it)",
        reason=Reason.RUN_CANCELLED,
    )


async def _folded(events: AsyncGenerator[RunEvent, None]) -> WorkflowAnswer:
    """A run's events folded: the answer (the last step's), every step, the run id."""
    fold = WorkflowFold()
    async with aclosing(events) as running:
        async for event in running:
            fold.add(event)
    return fold.answer()


def _check(request: AgentRequest) -> None:
    if request.session_id:
        raise InvalidArgument.field("session_id", "a workflow keeps no session")
    if request.tools:
        raise InvalidArgument.field("tools", "a workflow's agents offer their own tools")
    if request.parameters.set_fields():
        raise InvalidArgument.field("parameters", "a workflow's agents have their own")
    if not request.messages:
        raise InvalidArgument.field("messages", "at least one message is required")


def _error_json(error: StepError | None) -> dict[str, str]:
    if error is None:
        return {"kind": "Internal", "reason": "INTERNAL", "message": "a step failed"}
    return {"kind": error.kind, "reason": error.reason, "message": error.message}


_KINDS: dict[str, type[errors.SwitchboardError]] = {
    kind.__name__: kind
    for kind in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.FailedPrecondition,
        errors.PermissionDenied,
        errors.ResourceExhausted,
        errors.DeadlineExceeded,
        errors.Unavailable,
        errors.Internal,
    )
}


def _error_from(value: dict[str, str]) -> errors.SwitchboardError:
    kind = _KINDS.get(value.get("kind", ""), errors.Internal)
    reason = Reason(value["reason"]) if value.get("reason") in Reason.__members__ else None
    return kind(value.get("message", "the run failed"), reason=reason)


def _input_of(status: Any) -> dict[str, Any]:
    inputs = status.input
    args = inputs["args"] if isinstance(inputs, dict) else inputs.args
    value: dict[str, Any] = args[0]
    return value


def _name(spec: WorkflowSpec) -> str:
    return spec.name
