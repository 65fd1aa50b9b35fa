"""Runs an agent: resolve, validate, route, and stream the answer's events.

``Invoke`` and ``Stream`` share this one path: a unary call is the stream folded.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from service import context as call_context
from service.agents.pipeline import Pipeline, Stateless
from service.agents.spec import AgentSpec
from service.agents.validate import heavy, validate
from service.config import Snapshot
from service.deadline import Deadline
from service.domain import (
    AgentRequest,
    AgentResponse,
    Event,
    Finish,
    FinishReason,
    Fold,
    GuardVerdict,
    Message,
    Role,
    Start,
    Tool,
)
from service.echo import echo
from service.errors import FailedPrecondition, NotFound, PermissionDenied, Reason, Unavailable
from service.guards import (
    GuardContext,
    GuardObserver,
    NoObserver,
    OutputGuard,
    guard_input,
)
from service.offload import Offload
from service.providers.base import ModelCall
from service.routing.router import Router
from service.routing.tab import Tab
from service.schemas import Schemas
from service.sessions import Sessions
from service.tools.loop import ToolLoop
from service.tools.replay import replay
from service.tools.run_state import LoopState
from service.tools.spec import ServerTool
from service.usage.estimate import prompt_tokens

Events = AsyncGenerator[Event, None]
Traced = Callable[[AgentSpec, AgentRequest, Events], Events]
"""Wraps one agent call's events (:meth:`service.observability.agent_span.AgentSpans.traced`)."""


def _untraced(agent: AgentSpec, request: AgentRequest, events: Events) -> Events:
    return events


class InFlight:
    """How many calls are running on one runtime, so a reload can tell when the providers
    it retired are no longer in use."""

    __slots__ = ("_count", "_idle")

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def count(self) -> int:
        return self._count

    def enter(self) -> None:
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no call is running (at once if none is)."""
        await self._idle.wait()


@dataclass(frozen=True, slots=True)
class Runtime:
    """A config snapshot with the router built from it: what one call is served from."""

    snapshot: Snapshot
    router: Router
    calls: InFlight = field(default_factory=InFlight, compare=False)


class Runner:
    """Serves agent calls from the current runtime (swapped whole on reload)."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        pipeline: Pipeline | None = None,
        guard_observer: GuardObserver | None = None,
        http: object = None,
        offload: Offload | None = None,
        *,
        tools: ToolLoop | None = None,
        sessions: Sessions | None = None,
        traced: Traced | None = None,
    ) -> None:
        """``guard_observer`` records the guards' verdicts and times; ``http`` (an
        ``httpx2.AsyncClient``, owned by the caller) serves external guards. ``offload``:
        where CPU-heavy validation runs (shared with the servicer's heavy conversions, so
        they take turns). ``traced`` wraps each call's events from its first model call
        on (the ``invoke_agent`` span: :mod:`service.observability.agent_span`)."""
        self._traced: Traced = traced or _untraced
        self._runtime = runtime
        self._pipeline: Pipeline = pipeline or Stateless()
        self._guard_observer: GuardObserver = guard_observer or NoObserver()
        self._http = http
        self.offload = offload or Offload()
        self.tools = tools  # the agent loop, for agents with server tools
        self._sessions = sessions

    def max_messages(self) -> int:
        """The most messages one request may carry (``server.max_messages``)."""
        return self._runtime().snapshot.server.max_messages

    def agent(self, name: str) -> AgentSpec:
        """The agent named ``name`` in the current config.

        Raises:
            NotFound: no such agent.
        """
        return resolve(self._runtime().snapshot, name)

    def server_tools(self, agent: AgentSpec) -> list[ServerTool]:
        """The tools the server runs for ``agent`` now (none without a loop)."""
        if agent.loop is None or self.tools is None:
            return []
        return list(self.tools.offered(agent).values())

    def tool_arguments_problem(self, agent: str, tool: str, arguments: Any) -> str | None:
        """Why ``arguments`` do not fit the JSON schema of ``agent``'s server tool ``tool``
        now (the config snapshot's compiled schemas), or None: they fit, or the tool is no
        longer offered (the call is then refused when its run goes on)."""
        snapshot = self._runtime().snapshot
        spec = snapshot.agents.get(agent)
        found = [t for t in self.server_tools(spec) if t.name == tool] if spec else []
        return snapshot.schemas.violation(found[0].parameters, arguments) if found else None

    def default_deadline_s(self) -> float:
        """The deadline given to calls that arrive without one."""
        return self._runtime().snapshot.server.default_deadline_s

    def agents(self) -> list[AgentSpec]:
        """Every agent the caller may call, ordered by name."""
        may_call = call_context.current().may_call
        agents = self._runtime().snapshot.agents.values()
        return sorted((a for a in agents if may_call(a.name)), key=lambda a: a.name)

    def stream(self, request: AgentRequest, deadline: Deadline) -> AsyncGenerator[Event, None]:
        """Yield the answer's events: one Start, deltas, usage, one Finish. See
        :meth:`_events`; the call commits to a target at its first event."""
        return self._events(request, deadline, whole_answer=False)

    async def _events(
        self, request: AgentRequest, deadline: Deadline, *, whole_answer: bool
    ) -> AsyncGenerator[Event, None]:
        """Yield the answer's events: one Start, deltas, usage, one Finish.

        With ``whole_answer`` (Invoke) the router reads each attempt to its end before
        committing, so a failure after the first token is retried or falls back too.

        The whole call runs on the runtime current when it started (which counts it, so a
        reload closes the providers it replaced only after the call), and within ``deadline``.
        Raises NotFound, InvalidArgument, DeadlineExceeded, ResourceExhausted (a budget),
        Unavailable (a store), or the routed target's error. Closing the generator closes the
        upstream call. State (session, budget, cache, usage) is handled by the pipeline.
        """
        runtime = self._runtime()
        runtime.calls.enter()
        try:
            agent = resolve(runtime.snapshot, request.agent)
            if request.workflow_tools:
                agent = with_workflow_tools(agent, request.workflow_tools)
            server, schemas = runtime.snapshot.server, runtime.snapshot.schemas
            if heavy(request, schemas):
                # Pure-Python work that grows with the input: off the loop (service.offload).
                await self.offload.run(validate, request, agent, server, schemas)
            else:
                validate(request, agent, server, schemas)
            # Input guards first: what they let through (redacted) is what the session
            # stores, the cache keys on and the upstream sees.
            guards = self._guard_context(agent, request, deadline, schemas)
            guarded = await guard_input(agent.guards, request, guards)
            if guarded.refusal is not None:
                await self._pipeline.refuse(request, agent, guarded.verdicts, guarded.refusal)
                raise guarded.refusal
            request, verdicts = guarded.request, guarded.verdicts
            if agent.loop is not None and self.tools is not None:
                state = LoopState(request, [], 0)
                looped_events = self._looped(
                    runtime,
                    agent,
                    state,
                    guards,
                    deadline,
                    whole_answer=whole_answer,
                    input_verdicts=verdicts,
                )
                async with aclosing(self._traced(agent, request, looped_events)) as looped:
                    async for event in looped:
                        yield event
                return
            # Positional (no keyword dict), the function and self (no bound method): every
            # call holds this while it streams.
            route = functools.partial(
                type(self)._route, self, runtime.router, agent, request, guards, whole_answer, None
            )
            events = self._traced(
                agent, request, self._pipeline.run(request, agent, route, deadline, verdicts)
            )
            try:  # closed as aclosing would (without the object held: docs/benchmarks.md)
                async for event in events:
                    yield event
            finally:
                await events.aclose()
        finally:
            runtime.calls.leave()

    async def continue_run(
        self, state: LoopState, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """A stored run's events from its checkpoint ``state`` (claimed by the caller): its
        steps so far replayed, then on through the loop (:mod:`service.agents.runs`).

        Raises:
            FailedPrecondition: the agent has no server tools any more. What ``stream``
            raises.
        """
        runtime = self._runtime()
        runtime.calls.enter()
        try:
            agent = resolve(runtime.snapshot, state.request.agent)
            if state.request.workflow_tools:
                agent = with_workflow_tools(agent, state.request.workflow_tools)
            if agent.loop is None or self.tools is None:
                raise FailedPrecondition(
                    f"agent {echo(agent.name)} runs no server tools any more"
                ).about(run_id=state.run_id)
            guards = self._guard_context(agent, state.request, deadline, runtime.snapshot.schemas)
            for event in replay(state, agent, state.request.request_id, ended=False):
                yield event
            state.started = True
            looped_events = self._looped(
                runtime, agent, state, guards, deadline, whole_answer=False
            )
            async with aclosing(self._traced(agent, state.request, looped_events)) as looped:
                async for event in looped:
                    yield event
        finally:
            runtime.calls.leave()

    async def _looped(
        self,
        runtime: Runtime,
        agent: AgentSpec,
        state: LoopState,
        guards: GuardContext,
        deadline: Deadline,
        *,
        whole_answer: bool,
        input_verdicts: tuple[GuardVerdict, ...] = (),
    ) -> AsyncGenerator[Event, None]:
        """A run of the agent loop (:mod:`service.tools.loop`); each model step goes through
        the state pipeline (budgets, ledger) and the router. A session's history is loaded
        first, and the whole turn (every step's messages) appended once the run answers.
        ``input_verdicts`` (the input guards') go with the first step: its ledger line and
        audit entry carry them, and through its Finish the run's."""
        assert self.tools is not None
        request = state.request
        tenant = call_context.current().tenant
        if not state.conversation:
            history: tuple[Message, ...] = ()
            if request.session_id and self._sessions is not None:
                history = await self._sessions.history(
                    tenant, request.session_id, agent.memory, agent.name
                )
            state.conversation = [*history, *request.messages]
            state.history_len = len(history)

        def step(
            step_request: AgentRequest, offered: AgentSpec, step_deadline: Deadline
        ) -> AsyncGenerator[Event, None]:
            # The guard checks the calls of the caller's tools before they go out; the loop
            # checks every other call itself (a refused one is fed back to the model).
            caller_tools = frozenset(t.name for t in (*agent.tools, *step_request.tools))
            route = functools.partial(
                type(self)._route,
                self,
                runtime.router,
                offered,
                step_request,
                guards,
                whole_answer,
                caller_tools,
            )
            first = input_verdicts if state.step == 1 else ()
            return self._pipeline.run(step_request, offered, route, step_deadline, first)

        async with aclosing(self.tools.run(state, agent, step, guards, deadline)) as events:
            async for event in events:
                if (
                    isinstance(event, Finish)
                    and event.reason is not FinishReason.APPROVAL_PENDING
                    and request.session_id
                    and self._sessions is not None
                ):
                    turn = state.conversation[state.history_len :]
                    last = max(i for i, m in enumerate(turn) if m.role is Role.ASSISTANT)
                    await self._sessions.append(
                        tenant, request.session_id, agent.name, turn[:last], turn[last]
                    )
                yield event

    async def _route(  # noqa: PLR0917 (bound by a partial, the step's facts last)
        self,
        router: Router,
        agent: AgentSpec,
        request: AgentRequest,
        guards: GuardContext,
        whole_answer: bool,
        caller_tools: frozenset[str] | None,
        history: tuple[Message, ...],
        deadline: Deadline,
        tab: Tab,
    ) -> AsyncGenerator[Event, None]:
        """One model step, routed, its answer through the output guard, which checks its
        tool calls too (offered, schema, guards); in a tool loop's step (``caller_tools``
        set) only the calls of those tools: the loop checks every other call itself."""
        call = ModelCall(
            system_prompt=agent.system_prompt,
            messages=history + request.messages,
            parameters=agent.parameters.overridden_by(request.parameters),
            tools=agent.tools + request.tools,
        )
        # Attempts given up after they began answering are written into ``tab``: the
        # pipeline charges them with the call, however it ends.
        opened = await router.open(
            agent.route, call, deadline, agent.routing, whole_answer=whole_answer, tab=tab
        )
        target = opened.target.ref
        # Every answer: its tool calls are checked whole (offered, schema, guards) even for
        # an agent with no guards; its text only where the agent has output guards. Taken
        # event by event here (not through a generator of its own, held by every answer).
        output = OutputGuard(
            agent.guards,
            guards,
            {t.name: t for t in call.tools},
            functools.partial(prompt_tokens, call.system_prompt, call.messages, call.tools),
            only=caller_tools,
        )
        # Closed even if the caller leaves now, and before the last events: a block or the
        # Finish ends the upstream call.
        events = opened.events
        try:  # as aclosing would, without the object held (docs/benchmarks.md, Memory)
            yield Start(request.request_id, agent.name, agent.version, target)
            async for event in events:
                if (passed := output.take(event)) is not None:
                    yield passed
                if output.done:
                    break
        finally:
            await events.aclose()
        for last in await output.ending():
            if isinstance(last, Finish):
                yield Finish(last.reason, opened.attempts, last.cache_hit, target, last.verdicts)
                return
            yield last
        raise Unavailable(f"target {target.name!r} ended its answer without finishing it").about(
            target=target.name
        )

    def _guard_context(
        self, agent: AgentSpec, request: AgentRequest, deadline: Deadline, schemas: Schemas
    ) -> GuardContext:
        parameters = agent.parameters.overridden_by(request.parameters)
        return GuardContext(
            agent.name,
            self._guard_observer,
            parameters.response_format,
            self._http,
            deadline,
            offload=self.offload,
            schemas=schemas,
        )

    async def invoke(self, request: AgentRequest, deadline: Deadline) -> AgentResponse:
        """The stream's events folded into one response. Raises as ``stream`` does."""
        fold = Fold()
        async with aclosing(self._events(request, deadline, whole_answer=True)) as events:
            async for event in events:
                fold.add(event)
        return fold.result()


def with_workflow_tools(agent: AgentSpec, tools: tuple[Tool, ...]) -> AgentSpec:
    """``agent`` offering a workflow's ``tools`` too (its fingerprint, which keys the
    response cache, says so)."""
    material = json.dumps([[t.name, t.description, t.parameters] for t in tools], sort_keys=True)
    digest = hashlib.sha256(material.encode()).hexdigest()[:16]
    return replace(agent, tools=agent.tools + tools, fingerprint=f"{agent.fingerprint}+{digest}")


def resolve(snapshot: Snapshot, name: str) -> AgentSpec:
    """The agent ``name``, if the caller's key may call it (checked first, so a refusal does
    not reveal whether the agent exists).

    Raises:
        PermissionDenied: the caller's key may not call ``name``.
        NotFound: no such agent.
    """
    if not call_context.current().may_call(name):
        raise PermissionDenied(
            f"this API key may not call agent {echo(name)}", reason=Reason.AGENT_NOT_ALLOWED
        ).about(agent=name)
    agent = snapshot.agents.get(name)
    if agent is None:
        raise NotFound(f"no agent named {echo(name)}", reason=Reason.AGENT_NOT_FOUND).about(
            agent=name
        )
    return agent
