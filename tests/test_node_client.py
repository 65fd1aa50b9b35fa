"""The Node example (clients/node, @grpc/grpc-js) against the real server: Invoke, Stream, a
tool schema as JSON text, and the error details decoded (ErrorInfo, BadRequest, RetryInfo)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.chain_helpers import make_keys
from tests.conftest import ROOT
from tests.harness import serve_config

NODE = ROOT / "clients" / "node"
CONFIG = """
auth: {{enabled: true, keys_file: {keys}}}
rate_limits:
  tenant: {{requests_per_min: 6}}
targets:
  mock-echo: {{provider: mock, model: echo}}
agents:
  echo: {{route: [mock-echo], accepts_caller_tools: true}}
"""

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


async def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=NODE, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_the_node_example_runs_and_decodes_error_details(tmp_path: Path) -> None:
    if not (NODE / "node_modules" / "@grpc" / "grpc-js").exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install the example's packages"
        await run(npm, "ci", "--no-audit", "--no-fund")
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(CONFIG.format(keys=keys_file)) as served:
        out = await run(
            "node", "example.mjs", served.address, env={"SWITCHBOARD_API_KEY": keys[0]}, timeout=120
        )
    steps: dict[str, Any] = {}
    for line in out.splitlines():
        step = json.loads(line)
        steps[step.pop("step")] = step
    assert steps["invoke"] == {"text": "hello from node", "tokens": 3}
    assert steps["stream"] == {"text": "streamed to node"}
    assert steps["tool_schema_json"]["code"] == "OK"
    not_found = steps["not_found"]
    assert not_found["code"] == "NOT_FOUND"
    assert not_found["details"]["google.rpc.ErrorInfo"]["reason"] == "AGENT_NOT_FOUND"
    assert not_found["details"]["google.rpc.ErrorInfo"]["domain"] == "switchboard.dev"
    bad = steps["bad_request"]
    assert bad["code"] == "INVALID_ARGUMENT"
    fields = [v["field"] for v in bad["details"]["google.rpc.BadRequest"]["fieldViolations"]]
    assert fields == ["messages[0].role"]
    limited = steps["limited"]
    assert limited["code"] == "RESOURCE_EXHAUSTED"
    assert limited["details"]["google.rpc.ErrorInfo"]["reason"] == "RATE_LIMITED"
    assert limited["details"]["google.rpc.RetryInfo"]["retryDelay"]["seconds"] >= 1
