"""Serving limits and process behaviour: the concurrency limit, connection age, SIGHUP,
``--port-file``, and ``check-config`` validating as ``serve`` does."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import textwrap
from contextlib import aclosing
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard.v1 import agent_pb2, agent_pb2_grpc
from switchboard_client import AsyncClient, Client, ResourceExhaustedError

from tests import waiting
from tests.conftest import DEFAULT_CONFIG
from tests.harness import serve_config
from tests.processes import ROOT, serve_process, wait_for

SLOW = """
transport:
  max_concurrent_calls: 1
targets:
  slow:
    provider: mock
    model: echo
    mock:
      tokens_per_s: 2
agents:
  helper:
    route: [slow]
"""


async def test_past_the_concurrency_limit_a_call_is_refused_at_once() -> None:
    async with serve_config(SLOW) as served:
        stream = served.client.stream("helper", "one two three four five six seven eight")
        async with aclosing(stream):
            first = await anext(stream)  # the one allowed call is now in progress
            assert first.WhichOneof("event") == "start"

            # Queued, it would sit for seconds and end in DEADLINE_EXCEEDED; refused, it
            # ends at once, long before the running stream (4 s) has finished.
            with pytest.raises(ResourceExhaustedError) as refused:
                await served.client.invoke("helper", "me too", timeout=30)
            assert "limit of 1 concurrent calls" in refused.value.message
            assert refused.value.retry_after_s == pytest.approx(1.0)
            assert [v.description for v in refused.value.violations] == [
                "transport.max_concurrent_calls"
            ]
            assert served.app.providers["slow"].stats.in_flight == 1  # type: ignore[attr-defined]

            # Health and the catalogue are not calls that hold a slot: they still answer.
            health = health_pb2_grpc.HealthStub(served.channel)
            status = await health.Check(health_pb2.HealthCheckRequest())
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            assert [a.name for a in await served.client.list_agents()] == ["helper"]

        # The slot is free again once the server has seen the stream end.
        await waiting.wait_for(lambda: served.app.admission.in_flight == 0, what="slot freed")
        answer = await served.client.invoke("helper", "now")
        assert answer.message.content[0].text == "now"


async def test_a_connection_is_sent_away_after_max_connection_age() -> None:
    text = """
    transport:
      max_connection_age_s: 0.3
      max_connection_age_grace_s: 5
    targets:
      echo: {provider: mock, model: echo}
    agents:
      echo: {route: [echo]}
    """
    async with serve_config(text) as served:
        await served.client.invoke("echo", "hello")
        assert served.channel.get_state() is grpc.ChannelConnectivity.READY
        # GOAWAY after the age: the client leaves READY (to IDLE) and reconnects on the next
        # call — through the Service, which may pick another pod.
        async with asyncio.timeout(30):
            while served.channel.get_state() is grpc.ChannelConnectivity.READY:
                await served.channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        assert (await served.client.invoke("echo", "again")).message.content[0].text == "again"


async def test_a_client_flooding_pings_is_sent_away_and_others_are_not() -> None:
    text = """
    transport:
      min_client_ping_interval_s: 10
      max_ping_strikes: 2
      permit_keepalive_without_calls: true
    targets:
      echo: {provider: mock, model: echo}
    agents:
      echo: {route: [echo]}
    """
    async with serve_config(text) as served:
        flooder = grpc.aio.insecure_channel(
            served.address,
            options=[
                ("grpc.keepalive_time_ms", 100),  # a ping every 100 ms, calls or not
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        )
        try:
            await AsyncClient(served.address, channel=flooder).invoke("echo", "hi")
            await served.client.invoke("echo", "hi")
            # Two strikes, then GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings"): it leaves READY.
            async with asyncio.timeout(30):
                while flooder.get_state() is grpc.ChannelConnectivity.READY:
                    await flooder.wait_for_state_change(grpc.ChannelConnectivity.READY)
            # The well-behaved client's connection was never touched.
            assert served.channel.get_state() is grpc.ChannelConnectivity.READY
            assert (await served.client.invoke("echo", "fine")).message.content[0].text == "fine"
        finally:
            await flooder.close()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


RELOADABLE = """
auth:
  enabled: false
reload:
  watch: false
targets:
  echo: {provider: mock, model: echo}
agents:
  echo:
    system_prompt: First.
    route: [echo]
"""


@pytest.mark.system
def test_sighup_reloads_a_running_server_and_sigterm_exits_cleanly(tmp_path: Path) -> None:
    config = write(tmp_path / "switchboard.yaml", RELOADABLE)
    with serve_process(config) as server, Client(f"127.0.0.1:{server.port}") as client:
        before = client.invoke("echo", "hi").agent_version
        write(config, RELOADABLE.replace("First.", "Second, longer."))
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: client.invoke("echo", "hi").agent_version != before,
            what="the reload after SIGHUP",
        )
        after = client.invoke("echo", "hi").agent_version
        # An invalid file on SIGHUP: rejected and logged; the last good config keeps serving.
        write(config, "agents: {}\n")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_output("agents: Dictionary should have at least 1 item")
        assert any(m.startswith("config rejected") for m in server.messages)
        assert client.invoke("echo", "hi").agent_version == after
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert "config reloaded" in server.messages


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


@pytest.mark.system
def test_check_config_refuses_what_serve_refuses_naming_the_file_and_field(
    tmp_path: Path,
) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        """
        transport:
          max_concurrent_calls: 0
        targets:
          t: {provider: mock, model: echo}
        agents:
          a: {route: [t]}
        """,
    )
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "transport.max_concurrent_calls" in result.stderr

    secret = write(
        tmp_path / "secret.yaml",
        """
        targets:
          t: {provider: mock, model: echo, api_key: {env: NOT_SET_ANYWHERE}}
        agents:
          a: {route: [t]}
        """,
    )
    result = run_cli("check-config", str(secret))
    assert result.returncode == 2
    assert "targets.t.api_key" in result.stderr
    assert "NOT_SET_ANYWHERE" in result.stderr

    # serve refuses the same file with the same message and code.
    served = run_cli("serve", "--config", str(bad), "--port", "0")
    assert served.returncode == 2
    assert "transport.max_concurrent_calls" in served.stderr


@pytest.mark.system
def test_workers_on_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


@pytest.mark.system
def test_serve_on_a_grpc_port_in_use_is_one_clean_line(tmp_path: Path) -> None:
    config = write(
        tmp_path / "switchboard.yaml",
        """
        auth: {enabled: false}
        state: {backend: embedded, data_dir: data}
        targets:
          t: {provider: mock, model: echo}
        agents:
          a: {route: [t]}
        """,
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)
        )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if "cannot listen" in line]
    assert line == f"switchboard: server: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert result.stderr.rstrip().endswith(line)


async def test_the_health_command_exits_0_only_when_serving() -> None:
    async def health(address: str, *service: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "health",
            "--address",
            address,
            "--timeout",
            "5",
            *service,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        assert process.returncode is not None
        return process.returncode, err.decode()

    async with serve_config(SLOW) as served:
        assert await health(served.address) == (0, "")
        code, err = await health(served.address, "--service", "nope")
        assert code == 1
        assert "NOT_FOUND: no health service named 'nope'" in err  # grpc's own details are ""
        await served.app.health.enter_graceful_shutdown()  # what a drain does first
        code, err = await health(served.address)
        assert code == 1
        assert "NOT_SERVING" in err
    code, err = await health(served.address)  # nothing listens there any more
    assert code == 1
    assert "UNAVAILABLE" in err


async def test_a_client_running_many_calls_on_one_connection_is_never_refused(
    tmp_path: Path,
) -> None:
    """64 calls at once on one channel, the way a gRPC client multiplexes, against a server
    in its own process: with the default transport settings every call is answered (grpc
    core refused some with REFUSED_STREAM, which surfaces as UNAVAILABLE, when the
    per-connection stream limit was 100)."""
    config = tmp_path / "switchboard.yaml"
    text = DEFAULT_CONFIG.read_text().replace("../data", str(tmp_path / "data"))
    # No fixed HTTP or metrics port in tests (another server may hold them).
    config.write_text(text.replace("port: 8080", "port: 0").replace("port: 9464", "port: 0"))
    with serve_process(config) as server:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:

            async def caller(i: int) -> list[str]:
                return [
                    (await client.invoke("echo", f"call {i} {n}")).message.content[0].text
                    for n in range(20)
                ]

            answers = await asyncio.gather(*(caller(i) for i in range(64)))
    assert answers == [[f"call {i} {n}" for n in range(20)] for i in range(64)]


async def test_a_burst_of_streams_up_to_the_limit_is_taken_whole(tmp_path: Path) -> None:
    """1,200 Streams opened at once (issue 17's idle streams): grpc core held the calls its
    loop had not yet taken and, past 1,000 of them, dropped some at random with a bare
    CANCELLED. Every call up to ``max_concurrent_calls`` is now taken (each gets its first
    text delta); the ones past it are refused with RESOURCE_EXHAUSTED, never dropped."""
    config = tmp_path / "switchboard.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            auth: {{enabled: false}}
            server: {{host: 127.0.0.1, port: 0, grace_s: 1}}
            transport: {{max_concurrent_calls: 1150}}
            state: {{data_dir: {tmp_path / "data"}}}
            targets:
              slow: {{provider: mock, model: echo, mock: {{tokens_per_s: 0.001}}}}
            agents:
              helper: {{route: [slow]}}
            """
        )
    )
    request = agent_pb2.StreamRequest(
        agent="helper",
        messages=[
            agent_pb2.Message(
                role=agent_pb2.ROLE_USER, content=[agent_pb2.ContentPart(text="one two")]
            )
        ],
    )
    with serve_process(config) as server:
        channels = [
            grpc.aio.insecure_channel(
                f"127.0.0.1:{server.port}", options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(2)  # the server allows 1,000 streams a connection
        ]
        stubs = [agent_pb2_grpc.AgentServiceStub(c) for c in channels]
        calls = [stubs[i % 2].Stream(request, timeout=120) for i in range(1200)]

        async def first_text(call: Any) -> str:
            try:
                async for event in call:
                    if event.WhichOneof("event") == "text_delta":
                        return "text"
            except grpc.aio.AioRpcError as error:
                return error.code().name
            return "ended"

        try:
            outcomes = await asyncio.wait_for(asyncio.gather(*map(first_text, calls)), 100)
        finally:
            for call in calls:
                call.cancel()
            for channel in channels:
                await channel.close()
    counts = {o: outcomes.count(o) for o in set(outcomes)}
    assert counts == {"text": 1150, "RESOURCE_EXHAUSTED": 50}


async def test_every_service_reflection_lists_reports_serving_in_health() -> None:
    """ApprovalService and RunService were served but never set in health (SERVICE_UNKNOWN,
    a NOT_FOUND to Check): every switchboard service reflection lists must answer SERVING."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: PLC0415

    async with serve_config(SLOW) as served:
        stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)

        async def ask() -> Any:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        async for reply in stub.ServerReflectionInfo(ask()):
            listed = [s.name for s in reply.list_services_response.service]
            break
        ours = [name for name in listed if name.startswith("switchboard.v1.")]
        assert {"switchboard.v1.ApprovalService", "switchboard.v1.RunService"} <= set(ours)
        health = health_pb2_grpc.HealthStub(served.channel)
        for name in ours:
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name


class ReadCount(dict[str, str]):
    """An environment that counts the reads of each variable (a load reads a target's
    ``api_key: {env: NAME}`` once)."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.reads: dict[str, int] = {}

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.reads[key] = self.reads.get(key, 0) + 1
        return super().get(key, default)


def test_serve_loads_the_config_once(tmp_path: Path) -> None:
    from service.cli import _parser  # noqa: PLC0415 (the server: only here)
    from service.commands import run  # noqa: PLC0415

    config = write(
        tmp_path / "workers.yaml",
        """
        targets:
          t: {provider: mock, model: echo, api_key: {env: ONCE_KEY}}
        agents:
          a: {route: [t]}
        budgets:
          - {name: daily, period: day, limit_usd: 1}
        """,
    )
    environ = ReadCount({"ONCE_KEY": "k"})
    # Two workers on embedded state with a budget: validated (loaded and built), then
    # refused by the supervisor before any worker starts.
    args = _parser().parse_args(["serve", "--config", str(config), "--workers", "2"])
    assert run(args, environ) == 2
    assert environ.reads["ONCE_KEY"] == 1
