"""Async and sync clients for AgentService.

>>> async with AsyncClient("127.0.0.1:50051") as client:
...     response = await client.invoke("echo", "hello")
...     async for event in client.stream("assistant", "hi"):
...         ...

Failed calls raise a :class:`SwitchboardError` subclass carrying the status and its details.
Leaving a loop over a stream cancels the call, also when the stream is kept (see
:class:`EventStream`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc
from switchboard.v1 import session_pb2, session_pb2_grpc, usage_pb2, usage_pb2_grpc

from switchboard_client.errors import from_rpc_error

Conversation = str | Sequence[pb.Message]


def user(text: str) -> pb.Message:
    """A user message with one text part."""
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


def _messages(conversation: Conversation) -> list[pb.Message]:
    return [user(conversation)] if isinstance(conversation, str) else list(conversation)


def _metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def build_request(
    agent: str,
    conversation: Conversation,
    *,
    session_id: str = "",
    parameters: pb.Parameters | None = None,
    request_id: str = "",
    metadata: dict[str, str] | None = None,
    tools: Sequence[pb.Tool] = (),
    cache: bool | None = None,
) -> pb.InvokeRequest:
    """``cache``: None for the agent's default, True/False to opt in or out where allowed."""
    return pb.InvokeRequest(
        agent=agent,
        messages=_messages(conversation),
        session_id=session_id,
        parameters=parameters,
        request_id=request_id,
        metadata=metadata,
        tools=tools,
        cache=cache,
    )


def _stream_request(request: pb.InvokeRequest) -> pb.StreamRequest:
    out = pb.StreamRequest()
    out.ParseFromString(request.SerializeToString())  # same fields, same numbers
    return out


class EventStream:
    """The events of one ``Stream`` call.

    ``async for`` over it gets a fresh iterator that cancels the call when the loop lets go
    of it: a ``break``, a ``return`` or an exception out of the loop cancels the call at
    once, even while the caller keeps the stream (Python tells an iterator nothing when a
    loop is left, but it drops it). ``anext(stream)`` reads without a loop. Dropping the
    stream, :meth:`aclose`, or leaving ``async with`` cancels the call too. A call that
    already ended is not affected. Failed calls raise :class:`SwitchboardError`.
    """

    def __init__(self, call: grpc.aio.UnaryStreamCall[pb.StreamRequest, pb.StreamResponse]) -> None:
        self._call = call
        self._events = call.__aiter__()

    def __aiter__(self) -> AsyncIterator[pb.StreamResponse]:
        return _Loop(self)

    async def __anext__(self) -> pb.StreamResponse:
        try:
            return await self._events.__anext__()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def cancel(self) -> None:
        """Cancel the call (nothing happens when it already ended)."""
        self._call.cancel()

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()

    def __del__(self) -> None:
        _cancel_quietly(getattr(self, "_call", None))


class _Loop:
    """One ``async for`` over an :class:`EventStream`; the loop drops it when it is left."""

    __slots__ = ("_stream",)

    def __init__(self, stream: EventStream) -> None:
        self._stream = stream

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> pb.StreamResponse:
        return await self._stream.__anext__()

    def __del__(self) -> None:
        _cancel_quietly(self._stream._call)


class _SyncEvents:
    """The blocking client's events: a ``for`` loop's iterator cancels the call when the
    loop drops it, as :class:`EventStream` does."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[pb.StreamResponse]:
        return _SyncLoop(self)

    def __next__(self) -> pb.StreamResponse:
        try:
            event: pb.StreamResponse = next(self._call)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return event

    def cancel(self) -> None:
        self._call.cancel()

    def close(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        _cancel_quietly(getattr(self, "_call", None))


class _SyncLoop:
    """One ``for`` loop over :class:`_SyncEvents`; the loop drops it when it is left."""

    __slots__ = ("_events",)

    def __init__(self, events: _SyncEvents) -> None:
        self._events = events

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> pb.StreamResponse:
        return self._events.__next__()

    def __del__(self) -> None:
        _cancel_quietly(self._events._call)


def _cancel_quietly(call: Any) -> None:
    """Cancel ``call`` from a finalizer: never raise there (the loop may be closed)."""
    with contextlib.suppress(Exception):
        call.cancel()


class AsyncClient:
    """An asyncio client; one channel, reused for every call."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.AgentServiceStub(self._channel)
        self._sessions = session_pb2_grpc.SessionServiceStub(self._channel)
        self._usage = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._metadata = _metadata(api_key)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def invoke(
        self, agent: str, conversation: Conversation, *, timeout: float | None = None, **kw: object
    ) -> pb.InvokeResponse:
        """Run ``agent`` on ``conversation`` (a string is one user message)."""
        request = build_request(agent, conversation, **kw)  # type: ignore[arg-type]
        try:
            return await self._stub.Invoke(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def stream(
        self, agent: str, conversation: Conversation, *, timeout: float | None = None, **kw: object
    ) -> EventStream:
        """The answer's events, as an :class:`EventStream`: iterate it once with
        ``async for`` (leaving the loop, by ``break`` or an exception, cancels the call),
        read it with ``anext()``, or use it as ``async with client.stream(...) as events``.
        Dropping it, or ``aclose()``, cancels the call too."""
        request = _stream_request(build_request(agent, conversation, **kw))  # type: ignore[arg-type]
        return EventStream(self._stub.Stream(request, timeout=timeout, metadata=self._metadata))

    async def list_agents(self) -> list[pb.Agent]:
        agents: list[pb.Agent] = []
        token = ""
        try:
            while True:
                page = await self._stub.ListAgents(
                    pb.ListAgentsRequest(page_token=token), metadata=self._metadata
                )
                agents += page.agents
                token = page.next_page_token
                if not token:
                    return agents
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def get_agent(self, name: str) -> pb.Agent:
        try:
            response = await self._stub.GetAgent(
                pb.GetAgentRequest(name=name), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return response.agent

    async def get_session(self, session_id: str) -> session_pb2.Session:
        """A stored conversation with its messages (NotFoundError if the tenant has none)."""
        try:
            response = await self._sessions.GetSession(
                session_pb2.GetSessionRequest(id=session_id), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return response.session

    async def list_sessions(self) -> list[session_pb2.Session]:
        """Every session of the caller's tenant, ordered by id, without messages."""
        sessions: list[session_pb2.Session] = []
        token = ""
        try:
            while True:
                page = await self._sessions.ListSessions(
                    session_pb2.ListSessionsRequest(page_token=token), metadata=self._metadata
                )
                sessions += page.sessions
                token = page.next_page_token
                if not token:
                    return sessions
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def delete_session(self, session_id: str) -> None:
        try:
            await self._sessions.DeleteSession(
                session_pb2.DeleteSessionRequest(id=session_id), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def get_usage(
        self, request: usage_pb2.GetUsageRequest | None = None
    ) -> usage_pb2.GetUsageResponse:
        """The tenant's usage totals (default: today, ungrouped)."""
        try:
            return await self._usage.GetUsage(
                request or usage_pb2.GetUsageRequest(), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None


class Client:
    """A blocking client, for scripts and code without an event loop."""

    def __init__(self, target: str, *, api_key: str | None = None) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.AgentServiceStub(self._channel)
        self._sessions = session_pb2_grpc.SessionServiceStub(self._channel)
        self._usage = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._metadata = _metadata(api_key)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def invoke(
        self, agent: str, conversation: Conversation, *, timeout: float | None = None, **kw: object
    ) -> pb.InvokeResponse:
        request = build_request(agent, conversation, **kw)  # type: ignore[arg-type]
        try:
            response: pb.InvokeResponse = self._stub.Invoke(
                request, timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response

    def stream(
        self, agent: str, conversation: Conversation, *, timeout: float | None = None, **kw: object
    ) -> Iterator[pb.StreamResponse]:
        """The answer's events. Leaving a ``for`` loop over them, or dropping them, cancels
        the call."""
        request = _stream_request(build_request(agent, conversation, **kw))  # type: ignore[arg-type]
        call = self._stub.Stream(request, timeout=timeout, metadata=self._metadata)
        return _SyncEvents(call)

    def get_session(self, session_id: str) -> session_pb2.Session:
        """A stored conversation with its messages (NotFoundError if the tenant has none)."""
        try:
            response: session_pb2.GetSessionResponse = self._sessions.GetSession(
                session_pb2.GetSessionRequest(id=session_id), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response.session

    def delete_session(self, session_id: str) -> None:
        try:
            self._sessions.DeleteSession(
                session_pb2.DeleteSessionRequest(id=session_id), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def get_usage(
        self, request: usage_pb2.GetUsageRequest | None = None
    ) -> usage_pb2.GetUsageResponse:
        """The tenant's usage totals (default: today, ungrouped)."""
        try:
            response: usage_pb2.GetUsageResponse = self._usage.GetUsage(
                request or usage_pb2.GetUsageRequest(), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return response
