"""``serve --workers 2`` as real processes: shared port, restart after a crash, metrics of
all workers in one place, and a drain of every worker on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import textwrap
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from switchboard_client import Client

from tests.processes import alive, children, serve_process, wait_for

pytestmark = pytest.mark.system

CONFIG = """
server:
  grace_s: 30
auth:
  enabled: false
targets:
  echo: {provider: mock, model: echo}
  slow:
    provider: mock
    model: echo
    mock:
      tokens_per_s: 10
agents:
  echo: {route: [echo]}
  slow: {route: [slow]}
"""


def scrape(port: int) -> dict[str, float]:
    """The metrics as {"name{label=value}": value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def calls(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("switchboard_calls_total{"))


def test_two_workers_are_supervised_restarted_and_drained(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    environ = {"SWITCHBOARD_OBSERVABILITY__METRICS__PORT": "0"}
    with serve_process(config, "--workers", "2", environ=environ) as server:
        metrics_port = server.metrics_port()
        supervisor = server.process.pid
        wait_for(lambda: len(children(supervisor)) == 2, what="two workers")
        workers = children(supervisor)
        address = f"127.0.0.1:{server.port}"
        with Client(address) as client:
            assert client.invoke("echo", "hi").message.content[0].text == "hi"
        # A call is counted just after its answer is sent: wait for that before killing.
        wait_for(lambda: calls(scrape(metrics_port)) == 1, what="the first call counted")

        # A worker crashes: it is replaced by a new process, and the port keeps answering.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        # One reading of the children per check: two readings could see the victim alive
        # (two children) and then gone, before its replacement exists.
        wait_for(
            lambda: len(now := children(supervisor)) == 2 and victim not in now,
            what="the killed worker to be replaced",
        )
        replacement = children(supervisor) - workers
        assert len(replacement) == 1
        wait_for(
            lambda: sum(bool(re.fullmatch(r"worker \d serving", m)) for m in server.messages) == 3,
            what="the new worker to serve",
        )
        for _ in range(4):  # new connections, spread over both workers by the kernel
            with Client(address) as client:
                assert client.invoke("echo", "again").message.content[0].text == "again"

        # SIGHUP reaches every worker; their counters add up in the supervisor's metrics.
        server.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: scrape(metrics_port).get("switchboard_config_reloads_total{result=ok}") == 2,
            what="both workers' reloads in the metrics",
        )
        samples = scrape(metrics_port)
        assert samples["switchboard_worker_restarts_total{}"] == 1
        assert samples["switchboard_workers{}"] == 2
        # The standard collectors and the build's facts, from the supervisor's registry.
        assert [k for k in samples if k.startswith("switchboard_build_info{")]
        assert samples["process_resident_memory_bytes{}"] > 0
        # Every call counted once, whichever worker served it, the killed one included.
        wait_for(lambda: calls(scrape(metrics_port)) == 1 + 4, what="all five calls counted")

        # SIGTERM: every worker drains; a stream in flight finishes; all exit cleanly.
        words = " ".join(f"w{i}" for i in range(15))  # 1.5 s at 10 tokens/s
        with Client(address) as client:
            stream = client.stream("slow", words)
            assert next(stream).WhichOneof("event") == "start"
            server.process.send_signal(signal.SIGTERM)
            rest = list(stream)
        assert rest[-1].WhichOneof("event") == "finish"
        assert "".join(e.text_delta.text for e in rest) == words
        assert server.process.wait(timeout=60) == 0
        live = children(supervisor) | {pid for pid in workers | replacement if alive(pid)}
        assert not live
    assert "all workers stopped" in server.messages


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.yaml"
    config.write_text(textwrap.dedent(CONFIG))
    with serve_process(config, "--workers", "2") as server:
        wait_for(lambda: len(children(server.process.pid)) == 2, what="two workers")
        workers = children(server.process.pid)
        server.process.kill()  # no chance to tell anyone: the lifeline pipes close
        server.process.wait(timeout=30)
        try:
            wait_for(
                lambda: not any(alive(pid) for pid in workers), what="orphaned workers to exit"
            )
        finally:
            for pid in workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
