"""Two server processes on one Redis and one PostgreSQL: state is shared, budgets hold across
replicas, and a killed replica loses no recorded usage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import session_pb2 as spb
from switchboard.v1 import session_pb2_grpc, usage_pb2_grpc
from switchboard.v1 import usage_pb2 as upb
from switchboard_client import AsyncClient, Folder, ResourceExhaustedError

from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.harness import for_tests
from tests.state.stateful import BASE

pytestmark = [pytest.mark.asyncio, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]
LIMIT_USD = 0.2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self, config: Path, logs: Path, name: str) -> None:
        self.config = config
        self.log_path = logs / f"{name}.log"
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(extra_env or {})
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--config", str(self.config),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    async def ready(self, timeout_s: float = 120.0) -> None:
        """Wait (bounded) until the replica's state health is SERVING: a start on a loaded
        machine takes tens of seconds (imports alone took 30 s at a load of 10 on 2 cores)."""
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None
                assert self.process.poll() is None, self.log_path.read_text()
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(
                        health_pb2.HealthCheckRequest(service="switchboard.state"), timeout=1
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                assert time.monotonic() < deadline, self.log_path.read_text()
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM: the replica drains (``server.grace_s``) and exits; not waited for."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def _running(*replicas: Replica) -> Iterator[None]:
    try:
        yield
    finally:
        for replica in replicas:
            replica.stop()


@contextlib.asynccontextmanager
async def _clients(*replicas: Replica) -> AsyncIterator[list[AsyncClient]]:
    clients = [AsyncClient(r.address) for r in replicas]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


async def test_two_replicas_share_sessions_budgets_and_usage(tmp_path: Path) -> None:
    async with postgres_schema() as schema, redis_prefix() as prefix:
        config = tmp_path / "switchboard.yaml"
        config.write_text(
            for_tests(
                textwrap.dedent(BASE)
                + shared_state_yaml(schema, prefix)
                + f"budgets:\n  - {{name: shared-daily, period: day, limit_usd: {LIMIT_USD}}}\n"
            )
        )
        a, b = Replica(config, tmp_path, "a"), Replica(config, tmp_path, "b")
        with _running(a, b):
            a.start()
            b.start()
            await asyncio.gather(a.ready(), b.ready())
            async with _clients(a, b) as (ca, cb):
                await _session_through_one_read_through_the_other(ca, cb, a, b)
                spent = await _budget_holds_across_replicas(ca, cb, a)
                await _identical_calls_on_both_replicas_go_upstream_once(ca, cb)
                await _a_request_id_runs_once_across_replicas(ca, cb, a)

                before = await _usage(b.address)
                assert before.cost_usd == pytest.approx(spent)  # cache hits cost nothing

            # Kill A without a drain, restart it: every answered call is still recorded.
            a.kill()
            a.start()
            await a.ready()
            after = await _usage(a.address)
            assert (after.calls, after.cost_usd) == (before.calls, pytest.approx(before.cost_usd))


async def _session_through_one_read_through_the_other(
    ca: AsyncClient, cb: AsyncClient, a: Replica, b: Replica
) -> None:
    await ca.invoke("chat", "written through A", session_id="across")
    async with grpc.aio.insecure_channel(b.address) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        got = await stub.GetSession(spb.GetSessionRequest(id="across"))
    assert got.session.turn_count == 1
    assert got.session.messages[0].content[0].text == "written through A"
    continued = await cb.invoke("chat", "read through B", session_id="across")
    assert "conversation of 3 messages" in continued.message.content[0].text
    del a


async def _budget_holds_across_replicas(ca: AsyncClient, cb: AsyncClient, a: Replica) -> float:
    """A burst split over both replicas: what they answer never costs more than the budget."""
    params = pb.Parameters(max_tokens=5)
    already = (await _usage(a.address)).cost_usd

    refusals: list[ResourceExhaustedError] = []

    async def call(client: AsyncClient) -> float | None:
        try:
            answer = await client.invoke("echo", "a b c", parameters=params)
        except ResourceExhaustedError as exc:
            refusals.append(exc)
            return None
        return answer.usage.cost_usd

    costs = await asyncio.gather(*(call(ca if i % 2 else cb) for i in range(40)))
    assert all(e.violations[0].description.startswith("budget shared-daily") for e in refusals)
    answered = [c for c in costs if c is not None]
    assert answered, "some calls fit"
    assert len(answered) < len(costs), "the budget stopped the burst"
    assert already + sum(answered) <= LIMIT_USD + 1e-9
    return already + sum(answered)


async def _identical_calls_on_both_replicas_go_upstream_once(
    ca: AsyncClient, cb: AsyncClient
) -> None:
    """Concurrent identical calls to a slow cached agent, split over both replicas."""

    async def call(client: AsyncClient) -> bool:
        folder = Folder()
        async for event in client.stream("slow-cached", "one upstream call, please"):
            folder.add(event)
        return folder.result().cache_hit

    hits = await asyncio.gather(*(call(ca if i % 2 else cb) for i in range(6)))
    assert sorted(hits) == [False] + [True] * 5


async def _a_request_id_runs_once_across_replicas(
    ca: AsyncClient, cb: AsyncClient, a: Replica
) -> None:
    calls_before = (await _usage(a.address)).calls
    answers = await asyncio.gather(
        *(c.invoke("slow", "exactly once", request_id="across-1") for c in (ca, cb, ca, cb))
    )
    assert all(answer == answers[0] for answer in answers)
    assert (await _usage(a.address)).calls == calls_before + 1


async def _usage(address: str) -> upb.UsageGroup:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        reply = await stub.GetUsage(upb.GetUsageRequest())
    (group,) = reply.groups
    return group
