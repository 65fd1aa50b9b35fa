"""The real CLI in a subprocess: check-config, serve, and drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import AsyncClient, UnavailableError

from tests.conftest import DEFAULT_CONFIG, ROOT

pytestmark = pytest.mark.system

SLOW_CONFIG = """
server: {grace_s: 20}
auth: {enabled: false}
targets:
  slow: {provider: mock, model: echo, mock: {tokens_per_s: 20}}
agents:
  slow: {route: [slow]}
"""


def switchboard(*args: str) -> list[str]:
    return [sys.executable, "-m", "service", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_config_accepts_the_default_config() -> None:
    result = subprocess.run(
        switchboard("check-config", str(DEFAULT_CONFIG)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    assert ": ok (" in result.stdout
    assert f"{len(config['agents'])} agents" in result.stdout
    assert f"{len(config['targets'])} targets" in result.stdout
    assert f"{len(config['workflows'])} workflow" in result.stdout


def test_check_config_with_workflows_exits_cleanly_and_leaves_nothing(tmp_path: Path) -> None:
    """Building the workflows registers them with DBOS (a process global): stopping must
    release them, or the never-started gRPC server they hold keeps grpc's poller thread
    alive into the interpreter's teardown ("Error in sys.excepthook" at exit). Checking a
    config creates no state directory either."""
    path = tmp_path / "workflows.yaml"
    path.write_text(
        "targets: {m: {provider: mock, model: echo}}\n"
        "agents: {a: {route: [m]}, b: {route: [m]}}\n"
        "workflows: {w: {kind: sequential, steps: [{agent: a}, {agent: b}]}}\n"
    )
    result = subprocess.run(
        switchboard("check-config", str(path)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 workflow" in result.stdout
    assert "Error in sys.excepthook" not in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["workflows.yaml"]


def test_check_config_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "targets: {m: {provider: mock, model: echo}}\n"
        "agents: {a: {route: [m, missing]}, b: {route: [m], parameters: {temperature: 7}}}\n"
    )
    result = subprocess.run(
        switchboard("check-config", str(path)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "agents.b.parameters.temperature" in result.stderr
    assert "Traceback" not in result.stderr


@contextlib.asynccontextmanager
async def server_process(config: Path, port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    log = config.with_suffix(".log").open("wb")
    process = subprocess.Popen(
        switchboard("serve", "--config", str(config), "--port", str(port)),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await asyncio.wait_for(
                stub.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True), timeout=30
            )
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def test_sigterm_drains_in_flight_streams_refuses_new_calls_and_exits_0(
    tmp_path: Path,
) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(SLOW_CONFIG)
    port = free_port()
    words = " ".join(f"w{i}" for i in range(30))  # 30 tokens at 20/s: ~1.5 s of streaming
    async with server_process(config, port) as process:
        address = f"127.0.0.1:{port}"
        async with AsyncClient(address) as client:
            stream = client.stream("slow", words)
            first = [await anext(stream), await anext(stream)]
            assert [e.WhichOneof("event") for e in first] == ["start", "text_delta"]

            process.send_signal(signal.SIGTERM)

            async with AsyncClient(address) as other:
                while True:  # bounded by the stream still running: drain refuses new calls
                    try:
                        await other.invoke("slow", "hi", timeout=5)
                    except UnavailableError:
                        break

            rest = [e async for e in stream]
        events = first + rest
        assert events[-1].WhichOneof("event") == "finish"
        assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP
        text = "".join(e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta")
        assert text == words
        assert await asyncio.to_thread(process.wait, 30) == 0


async def test_sigint_on_an_idle_server_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "slow.yaml"
    config.write_text(SLOW_CONFIG)
    async with server_process(config, free_port()) as process:
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 30) == 0
