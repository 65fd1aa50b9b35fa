"""Sessions through the real server, on both backends."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import session_pb2 as spb
from switchboard_client import Client, InvalidArgumentError, NotFoundError

from tests.state.stateful import invoke_as, serve_state, sessions
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["embedded", "shared"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_session_continues_the_conversation(backend: str) -> None:
    async with serve_state(backend) as served:
        first = await served.client.invoke("chat", "hello there", session_id="s1")
        second = await served.client.invoke("chat", "and again", session_id="s1")

        assert "conversation of 1 message." in first.message.content[0].text
        # The model saw the stored turn (user + assistant) before the new message.
        assert "conversation of 3 messages" in second.message.content[0].text

        got = await sessions(served).GetSession(spb.GetSessionRequest(id="s1"))
        session = got.session
        assert (session.id, session.agent, session.turn_count) == ("s1", "chat", 2)
        roles = [m.role for m in session.messages]
        assert roles == [pb.ROLE_USER, pb.ROLE_ASSISTANT] * 2
        assert session.messages[2].content[0].text == "and again"
        assert session.messages[3] == second.message
        assert session.update_time.ToNanoseconds() >= session.create_time.ToNanoseconds() > 0


async def test_history_window_keeps_the_newest_turns(backend: str) -> None:
    async with serve_state(backend) as served:
        for text in ["one", "two", "three"]:
            answer = await served.client.invoke("short-memory", text, session_id="w")
        # max_turns: 1 → one stored turn (2 messages) + the new message.
        assert "conversation of 3 messages" in answer.message.content[0].text


async def test_concurrent_calls_on_one_session_lose_no_turn(backend: str) -> None:
    async with serve_state(backend) as served:
        await asyncio.gather(
            *(served.client.invoke("echo", f"turn {i}", session_id="busy") for i in range(12))
        )
        got = await sessions(served).GetSession(spb.GetSessionRequest(id="busy"))
        assert got.session.turn_count == 12
        texts = sorted(m.content[0].text for m in got.session.messages if m.role == pb.ROLE_USER)
        assert texts == sorted(f"turn {i}" for i in range(12))


async def test_a_cancelled_stream_appends_nothing(backend: str) -> None:
    async with serve_state(backend) as served:
        stats = served.app.providers["mock-trickle"].stats  # type: ignore[attr-defined]
        words = "one two three four five six seven eight"
        async for event in served.client.stream("trickle", words, session_id="c"):
            assert event.WhichOneof("event") == "start"
            break  # cancels the call before the answer is complete
        await wait_for(lambda: stats.cancelled == 1)
        # The cancelled call is in the ledger, as a failed call charged for its prompt
        # (the upstream had it; tests/state/test_money_e2e.py checks the figures).
        ledger = served.app.stores.durable
        deadline = time.monotonic() + 10
        while not (totals := await ledger.totals("default", 0, time.time() + 1, ())):
            assert time.monotonic() < deadline, "the cancelled call was never recorded"
            await asyncio.sleep(0.01)
        assert (totals[0].calls, totals[0].failed_calls) == (1, 1)
        assert totals[0].input_tokens > 0
        assert totals[0].cost_nanos > 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sessions(served).GetSession(spb.GetSessionRequest(id="c"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_empty_request_on_a_new_session_is_invalid(backend: str) -> None:
    async with serve_state(backend) as served:
        with pytest.raises(InvalidArgumentError, match="has no history"):
            await served.client.invoke("echo", [], session_id="empty")


async def test_list_pages_and_delete(backend: str) -> None:
    async with serve_state(backend) as served:
        for sid in ["b", "c", "a"]:
            await served.client.invoke("echo", "hi", session_id=sid)
        stub = sessions(served)

        page = await stub.ListSessions(spb.ListSessionsRequest(page_size=2))
        assert [s.id for s in page.sessions] == ["a", "b"]
        assert not page.sessions[0].messages
        rest = await stub.ListSessions(
            spb.ListSessionsRequest(page_size=2, page_token=page.next_page_token)
        )
        assert [s.id for s in rest.sessions] == ["c"]
        assert rest.next_page_token == ""

        await stub.DeleteSession(spb.DeleteSessionRequest(id="b"))
        for call in (
            stub.GetSession(spb.GetSessionRequest(id="b")),
            stub.DeleteSession(spb.DeleteSessionRequest(id="b")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            assert "no session 'b'" in (caught.value.details() or "")
        remaining = await stub.ListSessions(spb.ListSessionsRequest())
        assert [s.id for s in remaining.sessions] == ["a", "c"]


async def test_bad_session_requests_say_what_is_wrong(backend: str) -> None:
    async with serve_state(backend) as served:
        stub = sessions(served)
        for call, code, text in [
            (stub.GetSession(spb.GetSessionRequest()), "INVALID_ARGUMENT", "id"),
            (
                stub.ListSessions(spb.ListSessionsRequest(page_size=-1)),
                "INVALID_ARGUMENT",
                "page_size",
            ),
            (
                stub.ListSessions(spb.ListSessionsRequest(page_token="%%%")),
                "INVALID_ARGUMENT",
                "page_token",
            ),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code().name == code
            assert text in (caught.value.details() or "")
        with pytest.raises(InvalidArgumentError, match="session_id"):
            await served.client.invoke("echo", "x", session_id="s" * 129)


async def test_another_tenants_session_is_not_found(backend: str) -> None:
    async with serve_state(backend) as served:
        await invoke_as(served.app.runner, "acme", "chat", "secret plan", session_id="shared")
        stub = sessions(served)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetSession(spb.GetSessionRequest(id="shared"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert (await stub.ListSessions(spb.ListSessionsRequest())).sessions == []
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.DeleteSession(spb.DeleteSessionRequest(id="shared"))

        # The same id in the caller's tenant is a separate conversation.
        mine = await served.client.invoke("chat", "hello", session_id="shared")
        assert "conversation of 1 message." in mine.message.content[0].text
        acme = await invoke_as(served.app.runner, "acme", "chat", "more", session_id="shared")
        assert "conversation of 3 messages" in acme.message.text


async def test_the_python_client_reads_sessions_and_usage(backend: str) -> None:
    async with serve_state(backend) as served:
        client = served.client
        await client.invoke("echo", "hi", session_id="py-1")
        await client.invoke("echo", "hi", session_id="py-2")

        assert [s.id for s in await client.list_sessions()] == ["py-1", "py-2"]
        assert (await client.get_session("py-1")).messages[0].content[0].text == "hi"
        await client.delete_session("py-1")
        with pytest.raises(NotFoundError):
            await client.get_session("py-1")
        (group,) = (await client.get_usage()).groups
        assert group.calls == 2


async def test_the_blocking_client_too(backend: str) -> None:
    async with serve_state(backend) as served:
        await served.client.invoke("echo", "hi", session_id="sync-1")

        def blocking() -> tuple[int, int]:
            with Client(served.address) as client:
                turns = client.get_session("sync-1").turn_count
                client.delete_session("sync-1")
                with pytest.raises(NotFoundError):
                    client.get_session("sync-1")
                return turns, client.get_usage().groups[0].calls

        assert await asyncio.to_thread(blocking) == (1, 1)
