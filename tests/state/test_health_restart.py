"""Stores that are down, health, migration, and what survives a restart."""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import session_pb2 as spb
from switchboard_client import ResourceExhaustedError, UnavailableError

from tests.backends import POSTGRES_DSN, postgres_schema
from tests.harness import Served, serve_config
from tests.state.stateful import BASE, serve_state, sessions
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _state_health(served: Served) -> int:
    stub = health_pb2_grpc.HealthStub(served.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service="switchboard.state"))
    return int(reply.status)


@pytest.mark.parametrize("backend", ["embedded", "shared"])
async def test_state_health_is_serving(backend: str) -> None:
    async with serve_state(backend) as served:
        assert await _state_health(served) == health_pb2.HealthCheckResponse.SERVING


async def test_redis_down_is_unavailable_and_shows_in_health() -> None:
    async with postgres_schema() as schema:
        config = textwrap.dedent(BASE) + textwrap.dedent(f"""
            state:
              backend: shared
              postgres_dsn: {POSTGRES_DSN}
              postgres_schema: {schema}
              redis_url: redis://127.0.0.1:{_closed_port()}/0
              timeout_s: 1
              health_interval_s: 0.05
            budgets:
              - {{name: daily, period: day, limit_usd: 100}}
            """)
        async with serve_config(config) as served:
            with pytest.raises(UnavailableError, match="state store redis is unavailable"):
                await served.client.invoke("echo", "hello")
            with pytest.raises(UnavailableError, match="redis"):
                await served.client.invoke("chat", "hello", request_id="idem")
            # PostgreSQL still answers: sessions can be read.
            listed = await sessions(served).ListSessions(spb.ListSessionsRequest())
            assert list(listed.sessions) == []

            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            deadline = time.monotonic() + 10
            while await _state_health(served) != not_serving:
                assert time.monotonic() < deadline, "health never showed the store down"


async def test_embedded_state_survives_a_restart(tmp_path: Path) -> None:
    environ = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path)}
    async with serve_config(BASE, environ) as served:
        first = await served.client.invoke("chat", "remember me", session_id="keep")
        await served.client.invoke("echo", "counted")
    async with serve_config(BASE, environ) as served:
        again = await served.client.invoke("chat", "still there?", session_id="keep")
        assert "conversation of 3 messages" in again.message.content[0].text
        totals = await served.app.stores.durable.totals("default", 0, time.time() + 1, ())
        assert totals[0].calls == 3
        assert totals[0].cost_nanos > 0
        del first


async def test_a_budget_remembers_its_spend_across_a_restart(tmp_path: Path) -> None:
    environ = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path)}
    config = textwrap.dedent(BASE) + "budgets:\n  - {name: d, period: day, limit_usd: 0.05}\n"
    params = pb.Parameters(max_tokens=5)
    async with serve_config(config, environ) as served:
        spent = 0.0
        while True:
            try:
                spent += (
                    await served.client.invoke("echo", "a b", parameters=params)
                ).usage.cost_usd
            except ResourceExhaustedError:
                break
    async with serve_config(config, environ) as served:
        # A fresh process: its counters are read back from the ledger, so no new room.
        with pytest.raises(ResourceExhaustedError, match="budget 'd'"):
            await served.client.invoke("echo", "a b", parameters=params)
    assert 0 < spent <= 0.05


async def test_a_wait_for_a_condition_is_bounded() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0\.05s"):
        await wait_for(lambda: False, timeout_s=0.05)


async def test_a_down_store_never_hangs_a_call() -> None:
    # With PostgreSQL gone after start, a session call fails fast with UNAVAILABLE.
    async with postgres_schema() as schema:
        config = textwrap.dedent(BASE) + (
            f"state: {{backend: shared, postgres_dsn: '{POSTGRES_DSN}', "
            f"postgres_schema: {schema}, timeout_s: 1}}\n"
        )
        async with serve_config(config) as served:
            await served.client.invoke("echo", "warm up", session_id="s")
            # Take the tables away from this server: its queries now fail.
            conn = await asyncpg.connect(POSTGRES_DSN)
            try:
                await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            finally:
                await conn.close()
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sessions(served).GetSession(spb.GetSessionRequest(id="s"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "state store postgres" in (caught.value.details() or "")
            assert time.monotonic() - started < 30
