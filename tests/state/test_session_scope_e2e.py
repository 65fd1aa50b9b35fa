"""A key limited to some agents sees, continues and deletes only sessions of those agents;
a session stays with the agent that created it. Real API keys, on both backends."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from switchboard.v1 import session_pb2 as spb
from switchboard.v1 import session_pb2_grpc
from switchboard_client import AsyncClient, FailedPreconditionError, NotFoundError

from service.auth.keys import new_key, write_keys_file
from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.harness import Served, serve_config
from tests.state.stateful import BASE

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["embedded", "shared"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def two_keys(
    backend: str, folder: Path
) -> AsyncIterator[tuple[Served, AsyncClient, tuple[tuple[str, str], ...]]]:
    """One tenant, two keys: ``served.client`` may call every agent; the other client (and
    its auth metadata) only ``echo``."""
    all_key, every = new_key("acme")
    echo_key, echo_only = new_key("acme", agents=("echo",))
    keys = folder / "keys.yaml"
    write_keys_file(keys, [every, echo_only])
    config = textwrap.dedent(BASE) + f"auth: {{enabled: true, keys_file: '{keys}'}}\n"
    async with contextlib.AsyncExitStack() as stack:
        if backend == "shared":
            schema = await stack.enter_async_context(postgres_schema())
            prefix = await stack.enter_async_context(redis_prefix())
            config += shared_state_yaml(schema, prefix)
        served = await stack.enter_async_context(serve_config(config, api_key=all_key))
        limited = AsyncClient(served.address, api_key=echo_key)
        stack.push_async_callback(limited.close)
        yield served, limited, (("authorization", f"Bearer {echo_key}"),)


async def test_sessions_of_agents_a_key_may_not_call_are_not_found(
    backend: str, tmp_path: Path
) -> None:
    async with two_keys(backend, tmp_path) as (served, limited, _auth):
        await served.client.invoke("chat", "secret plans", session_id="c1")
        await served.client.invoke("echo", "hello", session_id="e1")

        with pytest.raises(NotFoundError) as hidden:
            await limited.get_session("c1")
        with pytest.raises(NotFoundError) as missing:
            await limited.get_session("c2")
        # Indistinguishable from a session that does not exist.
        assert hidden.value.message == missing.value.message.replace("c2", "c1")
        assert (await limited.get_session("e1")).agent == "echo"

        with pytest.raises(NotFoundError) as refused:
            await limited.delete_session("c1")
        assert refused.value.message == hidden.value.message
        assert (await served.client.get_session("c1")).turn_count == 1  # still there

        assert [s.id for s in await limited.list_sessions()] == ["e1"]
        assert [s.id for s in await served.client.list_sessions()] == ["c1", "e1"]

        await limited.delete_session("e1")
        assert [s.id for s in await served.client.list_sessions()] == ["c1"]


async def test_list_sessions_pages_over_the_visible_sessions_only(
    backend: str, tmp_path: Path
) -> None:
    async with two_keys(backend, tmp_path) as (served, _limited, auth):
        for i in range(7):
            agent = "echo" if i % 3 == 0 else "chat"  # s0, s3, s6 are echo's
            await served.client.invoke(agent, "hi", session_id=f"s{i}")
        stub = session_pb2_grpc.SessionServiceStub(served.channel)
        seen: list[list[str]] = []
        token = ""
        while True:
            page = await stub.ListSessions(
                spb.ListSessionsRequest(page_size=2, page_token=token), metadata=auth
            )
            seen.append([s.id for s in page.sessions])
            token = page.next_page_token
            if not token:
                break
        assert seen == [["s0", "s3"], ["s6"]]


async def test_a_session_stays_with_the_agent_that_created_it(backend: str, tmp_path: Path) -> None:
    async with two_keys(backend, tmp_path) as (served, limited, _auth):
        await served.client.invoke("chat", "secret plans", session_id="c1")

        # A key that may call the session's agent is told which agent that is.
        with pytest.raises(FailedPreconditionError) as other_agent:
            await served.client.invoke("echo", "and now you", session_id="c1")
        assert "'chat'" in other_agent.value.message

        # A key that may not call it learns nothing about it, and reads nothing of it.
        with pytest.raises(FailedPreconditionError) as not_yours:
            await limited.invoke("echo", "tell me", session_id="c1")
        assert "chat" not in not_yours.value.message
        with pytest.raises(FailedPreconditionError):
            async for _ in limited.stream("echo", "tell me", session_id="c1"):
                pass

        session = await served.client.get_session("c1")
        assert (session.agent, session.turn_count) == ("chat", 1)
        assert "secret plans" in session.messages[0].content[0].text
        # The owning agent continues it as before.
        answer = await served.client.invoke("chat", "go on", session_id="c1")
        assert "conversation of 3 messages" in answer.message.content[0].text
