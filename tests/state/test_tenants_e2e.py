"""Tenant isolation through real API keys: two tenants, one server, on both backends."""

from __future__ import annotations

import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from switchboard.v1 import session_pb2 as spb
from switchboard.v1 import session_pb2_grpc, usage_pb2_grpc
from switchboard.v1 import usage_pb2 as upb
from switchboard_client import AsyncClient

from service.auth.keys import new_key, write_keys_file
from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.chain_helpers import sample, scrape
from tests.harness import Served, serve_config
from tests.state.stateful import BASE

pytestmark = pytest.mark.asyncio


@contextlib.asynccontextmanager
async def two_tenants(
    backend: str, folder: Path
) -> AsyncIterator[tuple[Served, AsyncClient, dict[AsyncClient, Metadata]]]:
    """A server with keys for tenants acme (its client is ``served.client``) and globex, and
    each client's auth metadata for calling the state services' stubs."""
    acme_key, acme = new_key("acme")
    globex_key, globex = new_key("globex")
    keys = folder / "keys.yaml"
    write_keys_file(keys, [acme, globex])
    config = (
        textwrap.dedent(BASE)
        + f"auth: {{enabled: true, keys_file: '{keys}'}}\n"
        + "observability: {metrics: {port: 0}}\n"
    )
    async with contextlib.AsyncExitStack() as stack:
        if backend == "shared":
            schema = await stack.enter_async_context(postgres_schema())
            prefix = await stack.enter_async_context(redis_prefix())
            config += shared_state_yaml(schema, prefix)
        served = await stack.enter_async_context(serve_config(config, api_key=acme_key))
        other = AsyncClient(served.address, api_key=globex_key)
        stack.push_async_callback(other.close)
        yield served, other, {served.client: _bearer(acme_key), other: _bearer(globex_key)}


Metadata = tuple[tuple[str, str], ...]


def _bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


@pytest.mark.parametrize("backend", ["embedded", "shared"])
async def test_sessions_usage_and_cache_are_per_tenant(backend: str, tmp_path: Path) -> None:
    async with two_tenants(backend, tmp_path) as (served, globex, auth):
        acme = served.client
        answer = await acme.invoke("cached", "acme's question", session_id="s1")
        assert not answer.cache_hit

        # globex: same session id and same question, and it sees none of acme's state.
        theirs = await globex.invoke("cached", "acme's question", session_id="s1")
        assert not theirs.cache_hit
        sessions = session_pb2_grpc.SessionServiceStub(served.channel)
        got = await sessions.GetSession(spb.GetSessionRequest(id="s1"), metadata=auth[globex])
        assert got.session.turn_count == 1  # its own turn only
        await sessions.DeleteSession(spb.DeleteSessionRequest(id="s1"), metadata=auth[globex])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await sessions.GetSession(spb.GetSessionRequest(id="s1"), metadata=auth[globex])
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        mine = await sessions.GetSession(spb.GetSessionRequest(id="s1"), metadata=auth[acme])
        assert mine.session.turn_count == 1  # globex's delete did not touch acme's

        start = timestamp_pb2.Timestamp()
        start.FromSeconds(int(time.time()) - 60)
        stub = usage_pb2_grpc.UsageServiceStub(served.channel)
        for client in (acme, globex):
            reply = await stub.GetUsage(
                upb.GetUsageRequest(start_time=start, group_by=[upb.USAGE_DIMENSION_KEY]),
                metadata=auth[client],
            )
            (group,) = reply.groups
            assert group.calls == 1
            assert group.key_id  # the caller's key id, recorded with every call

        again = await acme.invoke("cached", "acme's question")
        assert again.cache_hit
        assert served.app.metrics_port is not None
        text = await scrape(served.app.metrics_port)
        assert sample(text, "switchboard_cache_lookups_total", agent="cached", result="hit") == 1
        assert sample(text, "switchboard_cache_lookups_total", agent="cached", result="miss") == 2
