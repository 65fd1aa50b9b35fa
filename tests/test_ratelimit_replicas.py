"""Two server processes on one Redis share their limits: the limit is global, not per replica."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from switchboard_client import Client, ResourceExhaustedError

from tests.chain_helpers import auth_config, make_keys

pytestmark = pytest.mark.system
ROOT = Path(__file__).resolve().parent.parent


def start_server(config: Path, port_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--config", str(config),
             "--port", "0", "--port-file", str(port_file)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_for_port(port_file: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"server did not start in 30 s:\n{log.read_text()}")


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"test:replicas:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_two_replicas_on_one_redis_share_the_limit(tmp_path: Path, prefix: str) -> None:
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",)), ("globex", ("*",))])
    limits = f"""
rate_limits:
  backend: redis
  redis: {{url: "redis://127.0.0.1:6379/0", key_prefix: "{prefix}", on_error: closed}}
  tenant: {{requests_per_min: 4}}
"""
    config = tmp_path / "switchboard.yaml"
    config.write_text(auth_config(keys_file, limits))
    processes = []
    try:
        ports = []
        for name in ("a", "b"):
            log = tmp_path / f"{name}.log"
            process = start_server(config, tmp_path / f"{name}.port", log)
            processes.append(process)
            ports.append(wait_for_port(tmp_path / f"{name}.port", process, log))
        clients = [Client(f"127.0.0.1:{p}", api_key=keys[0]) for p in ports]
        for i in range(4):  # alternate replicas: 2 calls each, 4 in all
            assert clients[i % 2].invoke("echo", f"call {i}").agent == "echo"
        for client in clients:  # either replica now refuses: the 4 were counted together
            with pytest.raises(ResourceExhaustedError) as info:
                client.invoke("echo", "one too many")
            assert info.value.retry_after_s is not None
            assert 0 < info.value.retry_after_s <= 15.0
        other = Client(f"127.0.0.1:{ports[1]}", api_key=keys[1])
        assert other.invoke("echo", "another tenant").agent == "echo"
        for client in [*clients, other]:
            client.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for name in ("a", "b"):
        text = (tmp_path / f"{name}.log").read_text()
        assert keys[0] not in text
        assert '"event": "call"' in text
