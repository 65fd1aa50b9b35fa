"""The browser example (clients/browser) in headless Chromium, from a page on another origin:
the OpenAI door streamed, Connect JSON unary and streamed, and an error's details, through
the CORS the config allows; from an origin it does not allow, the browser blocks every call."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import queue
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.chain_helpers import make_keys
from tests.conftest import ROOT
from tests.harness import serve_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE = ROOT / "clients" / "browser"
CONFIG = """
server:
  http:
    port: 0
    cors: {{allow_origins: ["{origin}"]}}
auth: {{enabled: true, keys_file: {keys}}}
targets:
  mock-echo: {{provider: mock, model: echo}}
agents:
  echo: {{route: [mock-echo]}}
"""

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install -y chromium; CI installs it)",
)


class _Site(SimpleHTTPRequestHandler):
    """The example's folder, and ``POST /results/<name>``: what a page reports."""

    reports: dict[str, queue.Queue[str]]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode()
        name = self.path.rpartition("/")[2]
        self.reports.setdefault(name, queue.Queue()).put(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        return None


@contextlib.contextmanager
def static_site(folder: Path) -> Iterator[tuple[int, dict[str, queue.Queue[str]]]]:
    """Serve ``folder`` over HTTP on a free loopback port (another origin than the server's);
    yields the port and the reports pages POST to ``/results/<name>``."""
    reports: dict[str, queue.Queue[str]] = {name: queue.Queue() for name in ("a", "b")}
    handler = type("Site", (_Site,), {"reports": reports})
    site = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(site.server_address[1]), reports
    finally:
        site.shutdown()
        site.server_close()
        thread.join(timeout=10)


def page_results(url: str, profile: Path, report: queue.Queue[str]) -> list[dict[str, Any]]:
    """Open ``url`` in headless Chromium and wait (at most 90 s) for the page to POST its
    results to ``report``; the JSON lines it wrote."""
    assert CHROMIUM is not None, "CI must install chromium (.ci/run does)"
    browser = subprocess.Popen(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-quic", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--no-default-browser-check",
            f"--user-data-dir={profile}", url,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        text = report.get(timeout=90)
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
    return [json.loads(line) for line in text.splitlines() if line]


async def test_the_browser_example_calls_each_door_across_origins(tmp_path: Path) -> None:
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    with static_site(PAGE) as (site_port, reports):
        allowed = f"http://127.0.0.1:{site_port}"
        config = CONFIG.format(origin=allowed, keys=keys_file)
        async with serve_config(config, http=True) as served:
            query = {"server": served.http_url, "key": keys[0], "agent": "echo"}
            url = f"{allowed}/index.html?" + urlencode({**query, "report": "results/a"})
            steps = await asyncio.to_thread(page_results, url, tmp_path / "a", reports["a"])
            # The same page from another origin (localhost is not 127.0.0.1 to a browser).
            url = f"http://localhost:{site_port}/index.html?" + urlencode(
                {**query, "report": "results/b"}
            )
            blocked = await asyncio.to_thread(page_results, url, tmp_path / "b", reports["b"])
    by_step = {step.pop("step"): step for step in steps}
    assert by_step["openai_stream"] == {"text": "hello from the browser"}
    invoke = by_step["connect_invoke"]
    assert invoke["text"] == "invoked over connect"
    assert invoke["outputTokens"] == 3
    assert by_step["connect_stream"] == {"text": "streamed over connect"}
    error = by_step["connect_error"]
    assert error["code"] == "not_found"
    assert error["reason"] == "AGENT_NOT_FOUND"
    assert len(error["requestId"]) == 32  # x-request-id, readable: CORS exposes it
    assert [step["step"] for step in blocked] == [
        "openai_stream",
        "connect_invoke",
        "connect_stream",
        "connect_error",
    ]
    assert all(step["failed"] == "TypeError" for step in blocked), blocked


async def test_a_preflight_from_an_unlisted_origin_is_refused(tmp_path: Path) -> None:
    keys_file, _, _ = make_keys(tmp_path, [("acme", ("*",))])
    config = CONFIG.format(origin="https://app.example.com", keys=keys_file)
    async with serve_config(config, http=True) as served:

        def preflight(origin: str) -> tuple[int, dict[str, str]]:
            request = urllib.request.Request(
                served.http_url + "/v1/chat/completions",
                method="OPTIONS",
                headers={
                    "origin": origin,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": "authorization, content-type",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.status, dict(answer.headers)
            except urllib.error.HTTPError as error:
                return error.code, dict(error.headers)

        ok_status, ok = await asyncio.to_thread(preflight, "https://app.example.com")
        bad_status, bad = await asyncio.to_thread(preflight, "https://evil.example.net")
    assert ok_status == 200
    assert ok["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in ok["access-control-allow-headers"]
    assert bad_status == 400
    assert "access-control-allow-origin" not in {k.lower() for k in bad}
