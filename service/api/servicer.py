"""AgentService: thin — protobuf in, domain call, protobuf out; errors mapped in one place."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

import grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc

from service import context as call_context
from service.agents.runner import Runner
from service.api import convert, paging
from service.api import workflows as workflows_api
from service.api.admission import Admission
from service.api.errors import abort
from service.deadline import Deadline
from service.domain import AgentRequest
from service.echo import echo
from service.errors import InvalidArgument, NotFound, Reason, SwitchboardError
from service.idempotency import Idempotency, idempotency_key
from service.runs.service import Runs
from service.workflows.ids import run_id_for

if TYPE_CHECKING:
    from service.workflows.runs import Workflows

Context = grpc.aio.ServicerContext[object, object]


def new_request_id() -> str:
    return uuid.uuid4().hex


def _about(exc: Exception, agent: str) -> Exception:
    """``exc`` with the agent the call named in its ErrorInfo metadata (when it has none)."""
    if isinstance(exc, SwitchboardError):
        exc.about(agent=agent)
    return exc


def deadline_of(context: Context, default_s: float) -> Deadline:
    """The caller's deadline, or ``default_s`` from now when the caller set none."""
    remaining: float | None = context.time_remaining()
    return Deadline.after(default_s if remaining is None else remaining)


class AgentServicer(pb_grpc.AgentServiceServicer):
    def __init__(
        self,
        runner: Runner,
        admission: Admission,
        idempotency: Idempotency | None = None,
        workflows: Workflows | None = None,
        runs: Runs | None = None,
    ) -> None:
        self._runner = runner
        self._admission = admission
        self._idempotency = idempotency
        self._runs = runs
        self._workflows = workflows

    def _workflow(self, name: str) -> Workflows | None:
        """The workflows, when ``name`` is one of them."""
        if self._workflows is not None and self._workflows.has(name):
            return self._workflows
        return None

    async def _answer(
        self, request: pb.InvokeRequest, agent_request: AgentRequest, deadline: Deadline
    ) -> pb.InvokeResponse:
        workflows = self._workflow(request.agent)
        if workflows is None:
            return convert.response_to_proto(await self._runner.invoke(agent_request, deadline))
        ctx = call_context.current()
        # A caller's request id names the run: a retry after a crash reattaches to it.
        run_id = (
            run_id_for(ctx.tenant, ctx.key_id, request.request_id) if request.request_id else ""
        )
        answer = await workflows.invoke(agent_request, deadline, run_id=run_id)
        return workflows_api.answer_to_proto(answer)

    async def Invoke(self, request: pb.InvokeRequest, context: Context) -> pb.InvokeResponse:  # noqa: N802
        try:
            with self._admission.admit():
                agent_request = await self._convert(request)
                deadline = deadline_of(context, self._runner.default_deadline_s())
                if self._idempotency is None or not request.request_id:
                    return await self._answer(request, agent_request, deadline)

                async def work() -> bytes:
                    response = await self._answer(request, agent_request, deadline)
                    return response.SerializeToString()

                # A caller's request id is its idempotency key: at most once per tenant+key.
                ctx = call_context.current()
                answer = await self._idempotency.run(
                    idempotency_key(ctx.tenant, ctx.key_id, request.request_id),
                    hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest(),
                    deadline,
                    work,
                )
        except Exception as exc:  # mapped to a status in one place
            await abort(context, _about(exc, request.agent))
            raise  # unreachable: abort raises
        return pb.InvokeResponse.FromString(answer)

    async def Stream(  # noqa: N802
        self, request: pb.StreamRequest, context: Context
    ) -> AsyncIterator[pb.StreamResponse]:
        try:
            with self._admission.admit():
                deadline = deadline_of(context, self._runner.default_deadline_s())
                if request.run_id:
                    if self._workflows is not None and await self._workflows.owns(request.run_id):
                        attached = self._workflows.attach(request.run_id, deadline)
                        async with aclosing(attached):
                            async for event in attached:
                                yield workflows_api.event_to_proto(event)
                        return
                    if self._runs is None:
                        raise NotFound(
                            f"no run {echo(request.run_id)}", reason=Reason.RUN_NOT_FOUND
                        )
                    # Continue (or replay) a stored run: RunService.ResumeRun, streamed.
                    messages = convert.messages_from_proto(request.messages)
                    resumed = self._runs.resume(request.run_id, messages, deadline)
                    async with aclosing(resumed) as events:
                        async for event in events:
                            yield workflows_api.event_to_proto(event)
                    return
                agent_request = await self._convert(request)
                workflows = self._workflow(request.agent)
                if workflows is not None:
                    async with aclosing(workflows.stream(agent_request, deadline)) as run:
                        async for event in run:
                            yield workflows_api.event_to_proto(event)
                    return
                events = self._runner.stream(agent_request, deadline)
                try:  # as aclosing would, without the object held (docs/benchmarks.md, Memory)
                    async for event in events:
                        yield convert.event_to_proto(event)
                finally:
                    await events.aclose()
        except Exception as exc:  # noqa: BLE001 (mapped to a status in one place)
            await abort(context, _about(exc, request.agent))

    async def ListAgents(  # noqa: N802
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        try:
            size = paging.page_size(request.page_size)
            after = paging.decode_token(request.page_token, "ListAgents")
            listed = [
                (a.name, convert.agent_to_proto(a, self._runner.server_tools(a)))
                for a in self._runner.agents()
            ]
            if self._workflows is not None:
                listed += [
                    (w.name, workflows_api.workflow_to_proto(w)) for w in self._workflows.specs()
                ]
            agents = sorted((entry for entry in listed if entry[0] > after), key=_first)
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        page = agents[:size]
        token = paging.encode_token(page[-1][0]) if len(agents) > size else ""
        return pb.ListAgentsResponse(agents=[a for _, a in page], next_page_token=token)

    async def GetAgent(  # noqa: N802
        self, request: pb.GetAgentRequest, context: Context
    ) -> pb.GetAgentResponse:
        try:
            if not request.name:
                raise InvalidArgument.field("name", "the agent name is required")
            workflows = self._workflow(request.name)
            if workflows is not None:
                described = workflows_api.workflow_to_proto(workflows.spec(request.name))
            else:
                agent = self._runner.agent(request.name)
                described = convert.agent_to_proto(agent, self._runner.server_tools(agent))
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return pb.GetAgentResponse(agent=described)

    async def _convert(self, request: pb.InvokeRequest | pb.StreamRequest) -> AgentRequest:
        """The domain request. A big body is converted in a worker thread: the conversion is
        Python work that grows with the body, and on the event loop it would stall every
        other call and the health probes."""
        convert_it = functools.partial(
            convert.request_from_proto,
            request,
            self._request_id(),
            max_messages=self._runner.max_messages(),
        )
        if request.ByteSize() > convert.BIG_BODY_BYTES:
            return await self._runner.offload.run(convert_it)
        return convert_it()

    @staticmethod
    def _request_id() -> str:
        return call_context.current().request_id or new_request_id()


def _first(entry: tuple[str, object]) -> str:
    return entry[0]
