"""The web console in real headless Chromium (Playwright's playwright-core driving the Debian
chromium): sign-in with an admin key only, live usage by tenant, keys created and revoked from
the page, targets with breaker state, recent calls without prompts, and the approvals panel.
Screenshots go to ``test-output/console/`` (or ``$SWITCHBOARD_TEST_OUTPUT/console``)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from switchboard_client import AsyncClient, UnauthenticatedError

from service.auth.keys import new_key, write_keys_file
from tests.chain_helpers import AGENTS
from tests.conftest import ROOT
from tests.harness import Served, serve_config
from tests.waiting import wait_for

BROWSER = ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(os.environ.get("SWITCHBOARD_TEST_OUTPUT", ROOT / "test-output")) / "console"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed"),
]


class Page:
    """The console in Chromium, driven through tests/browser/console.mjs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def do(self, command: str, **args: Any) -> dict[str, Any]:
        """Run ``command``; the page must have logged no script error or CSP report since
        the last command (Chromium also logs each 4xx answer the page asked for, as
        "Failed to load resource": those are refusals the page shows, checked by state)."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.write((json.dumps({"do": command, **args}) + "\n").encode())
        await self._process.stdin.drain()
        line = await asyncio.wait_for(self._process.stdout.readline(), timeout=60)
        assert line, "the browser driver ended"
        answer: dict[str, Any] = json.loads(line)
        assert answer["ok"], answer.get("error")
        problems = [p for p in answer["problems"] if "Failed to load resource" not in p]
        assert problems == [], problems
        return answer


async def _npm_ci() -> None:
    if (BROWSER / "node_modules" / "playwright-core").exists():
        return
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to install playwright-core"
    process = await asyncio.create_subprocess_exec(
        npm, "ci", "--no-audit", "--no-fund", cwd=BROWSER,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, out.decode()


@pytest.fixture
async def page_of() -> AsyncIterator[Any]:
    await _npm_ci()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    processes: list[asyncio.subprocess.Process] = []

    async def open_page(url: str) -> Page:
        process = await asyncio.create_subprocess_exec(
            "node", "console.mjs", url, str(OUTPUT), cwd=BROWSER,
            env={**os.environ, "CHROMIUM": CHROMIUM},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)
        return Page(process)

    yield open_page
    for process in processes:
        if process.stdin is not None and process.returncode is None:
            process.stdin.write(b'{"do": "close"}\n')
            await process.stdin.drain()
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=20)
        except TimeoutError:
            process.kill()
            await process.wait()


def _usage(state: dict[str, Any]) -> dict[str, int]:
    """Calls by group in the page's usage table."""
    return {row[0]: int(row[1]) for row in state["usage"] if len(row) > 1}


async def _calls(served: Served, key: str, agent: str, n: int, text: str) -> None:
    client = AsyncClient(served.address, channel=served.channel, api_key=key)
    for _ in range(n):
        await client.invoke(agent, text)
    # The ledger line is written after the answer: wait until it is.
    await wait_for(lambda: served.app.pipeline.recorder.in_flight == 0, what="ledger writes")


async def test_the_console_in_a_real_browser(tmp_path: Path, page_of: Any) -> None:
    admin_key, admin = new_key("ops", scopes=["admin"])
    plain_key, plain = new_key("acme", agents=["echo"])
    write_keys_file(tmp_path / "keys.yaml", [admin, plain])
    keys = tmp_path / "keys.yaml"
    config = f"server: {{http: {{port: 0}}}}\nauth: {{enabled: true, keys_file: {keys}}}\n{AGENTS}"
    async with serve_config(config, http=True) as served:
        async with httpx2.AsyncClient(base_url=served.http_url, timeout=10) as http:
            shell = await http.get("/console/")
            assert shell.status_code == 200
            assert "script-src 'self'" in shell.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in shell.headers["content-security-policy"]
            assert (await http.post("/console/")).status_code == 405
            assert (await http.get("/console/nope.js")).status_code == 404
            assert (await http.get("/console")).headers["location"] == "/console/"
        await _calls(served, plain_key, "echo", 2, "a private prompt")
        await _calls(served, admin_key, "assistant", 1, "another private prompt")

        page = await page_of(served.http_url)
        await page.do("screenshot", name="1-sign-in")
        refused = await page.do("signin", key=plain_key)
        assert not refused["state"]["signedIn"]
        assert "admin scope" in refused["state"]["signinError"]

        signed = (await page.do("signin", key=admin_key))["state"]
        assert signed["signedIn"], signed
        assert signed["error"] == ""
        assert _usage(signed) == {"acme": 2, "ops": 1}
        assert signed["bars"] == 25
        assert signed["buckets"] >= 1
        assert [row[:4] for row in signed["targets"]] == [["mock-echo", "mock", "echo", "closed"]]
        assert {row[3] for row in signed["calls"]} == {"echo", "assistant"}
        assert "private prompt" not in json.dumps(signed)
        assert {row[1] for row in signed["keys"]} == {"ops", "acme"}
        # ApprovalService is served; the admin key has no approver scope.
        no_scope = "This key lacks the approver scope: approvals are not shown."
        assert signed["approvalsNote"] == no_scope
        await page.do("screenshot", name="2-console")

        # Live: calls made now show up on the next refresh.
        await _calls(served, plain_key, "echo", 3, "more")
        later = (await page.do("refresh"))["state"]
        assert _usage(later) == {"acme": 5, "ops": 1}

        # Keys made and revoked from the page work at once.
        made = (await page.do("create", tenant="web", agents="echo"))["state"]
        assert made["error"] == ""
        secret = made["secret"]
        assert secret.startswith("sb_")
        web = AsyncClient(served.address, channel=served.channel, api_key=secret)
        assert (await web.invoke("echo", "hi")).agent == "echo"
        bad = (await page.do("create", tenant="web", agents="nope"))["state"]
        assert "no agent named 'nope'" in bad["error"]
        key_id = secret.split("_")[1]
        revoked = (await page.do("revoke", keyId=key_id))["state"]
        assert [r[5] for r in revoked["keys"] if r[0] == key_id] == ["revoked"]
        with pytest.raises(UnauthenticatedError):
            await web.invoke("echo", "hi")
        shot = await page.do("screenshot", name="3-key-revoked")
        assert Path(shot["path"]).stat().st_size > 10_000
