"""The server on a read-only root filesystem, as the container runs it (no Docker engine here):
a private mount namespace remounts / read-only, a tmpfs stands in for the container's /tmp, and
only the directory of the port file stays writable."""

from __future__ import annotations

import shutil
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from switchboard_client import Client

from tests.processes import serve_process, wait_for
from tests.test_workers import scrape

pytestmark = pytest.mark.system

SETUP = (
    "mount --bind -o ro / / && mount -o remount,bind,ro / "
    '&& mount --bind "$OUT" "$OUT" && mount -o remount,bind,rw "$OUT" '
    '&& mount -t tmpfs -o size=32m tmpfs "$SCRATCH" && exec "$@"'
)


def can_remount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -o remount,bind,ro / /",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not can_remount_read_only(), reason="needs root and mount namespaces")
def test_workers_serve_reload_and_export_metrics_on_a_read_only_root(tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    config = out / "switchboard.yaml"
    text = textwrap.dedent(
        """
        auth:
          enabled: false
        targets:
          echo: {provider: mock, model: echo}
        agents:
          echo: {system_prompt: One., route: [echo]}
        """
    )
    config.write_text(text)
    environ = {
        "OUT": str(out),
        "SCRATCH": str(scratch),
        "TMPDIR": str(scratch),  # the container's /tmp
        "HOME": str(scratch),
        "PYTHONDONTWRITEBYTECODE": "1",
        "SWITCHBOARD_OBSERVABILITY__METRICS__PORT": "0",
    }
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", SETUP, "sh"]
    with serve_process(config, "--workers", "2", environ=environ, wrapper=wrapper) as server:
        metrics_port = server.metrics_port()
        with Client(f"127.0.0.1:{server.port}") as client:
            before = client.invoke("echo", "hi").agent_version
            config.write_text(text.replace("One.", "Two and more."))
            wait_for(lambda: client.invoke("echo", "hi").agent_version != before, what="reload")
        # Both workers noticed the edit, and their counters (files under TMPDIR) add up.
        wait_for(
            lambda: scrape(metrics_port).get("switchboard_config_reloads_total{result=ok}") == 2,
            what="both workers' reloads in the metrics",
        )
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
    assert "Read-only file system" not in server.output
    assert "Traceback" not in server.output
