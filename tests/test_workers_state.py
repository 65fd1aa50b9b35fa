"""``serve --workers N`` refuses state each worker would keep for itself (issue 12, §5):
budgets on embedded state, rate limits on the memory backend. N workers would otherwise allow
N times each budget and limit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.system

CONFIG = """
auth: {enabled: false}
targets:
  echo: {provider: mock, model: echo}
agents:
  echo: {route: [echo]}
"""


def _serve(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "switchboard.yaml"
    config.write_text(textwrap.dedent(CONFIG) + textwrap.dedent(extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "serve", "--config", str(config), "--workers", "2",
         "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_workers_refuse_budgets_on_embedded_state(tmp_path: Path) -> None:
    done = _serve(tmp_path, "budgets:\n  - {name: daily, period: day, limit_usd: 1}\n")
    assert done.returncode == 2, done.stderr
    assert "budgets (daily) on state.backend: embedded" in done.stderr
    assert "set state.backend: shared" in done.stderr
    assert "or run one worker" in done.stderr


def test_workers_refuse_rate_limits_in_memory(tmp_path: Path) -> None:
    done = _serve(tmp_path, "rate_limits:\n  tenant: {requests_per_min: 60}\n")
    assert done.returncode == 2, done.stderr
    assert "rate_limits.backend: memory" in done.stderr
    assert "set rate_limits.backend: redis" in done.stderr
