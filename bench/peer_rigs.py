"""What bench/peers.py's runs are made of: the gateways' processes, h2load, the fast fake
upstream, the requests and the HTTP first-event timer (bench/provider_first_event.py uses them
too); the gRPC door's is bench/grpc_first_event.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import free_port, pinned

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
LITELLM_VERSION = "1.108.7"
PORTKEY_VERSION = "1.15.2"
KEY = "sk-bench-0123456789"
MODEL = "bench-model"
SYSTEM = "You are a terse assistant."
USER = "Say a few words about switchboards."
GATEWAY_CPU = "0"
CLIENT_CPU = 1


@dataclass
class Figures:
    """One gateway's figures in one run."""

    unary_per_cpu_s: float = 0.0
    streams_per_cpu_s: float = 0.0
    unary_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    ttfe_ms: float = 0.0


@dataclass
class Gateway:
    name: str
    process: subprocess.Popen[bytes]
    unary: Callable[[int, int], tuple[float, list[float]]]  # (n, c) -> (req/s, latencies s)
    streams: Callable[[int, int], tuple[float, list[float]]]
    first_event: Callable[[], float]
    answered_ok: Callable[[], int] | None = None
    """Calls answered OK so far (gRPC errors travel in trailers: h2load counts them as 200s)."""
    runs: list[Figures] = field(default_factory=list)


# ---------------------------------------------------------------- processes and CPU time


def start(
    argv: list[str], *, env: dict[str, str] | None = None, log: Path, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    command = ["taskset", "-c", GATEWAY_CPU, *argv] if shutil.which("taskset") else argv
    out = log.open("wb")
    return subprocess.Popen(
        command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    limit = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < limit:
        try:
            if check():
                return
        except Exception as exc:
            last = exc
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not come up in {timeout_s:.0f}s ({last})")


# ------------------------------------------------------------------------ installing peers


def install_litellm() -> Path:
    venv = DATA / f"litellm-{LITELLM_VERSION}"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
            check=True,
        )
    return python


def install_portkey() -> Path:
    folder = DATA / f"portkey-{PORTKEY_VERSION}"
    script = folder / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not script.exists():
        print(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {folder}", file=sys.stderr)
        folder.mkdir(parents=True, exist_ok=True)
        # The gateway's streamed path appends to the upstream response's headers, which
        # @hono/node-server 1.14 and later hand over as fetch's immutable Headers ("TypeError:
        # immutable", every stream a 500); 1.13.8 copies them, as the gateway expects.
        (folder / "package.json").write_text(
            '{"private": true, "overrides": {"@hono/node-server": "1.13.8"}}\n'
        )
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
            cwd=folder,
            check=True,
        )
    return script


# ---------------------------------------------------------------------------- load tools


def h2load(
    url: str, body: bytes, headers: list[str], n: int, c: int, *, h1: bool
) -> tuple[float, list[float]]:
    """``n`` requests, ``c`` in flight (``c`` connections for HTTP/1.1, ``c`` streams on one
    connection for HTTP/2): requests per second and each request's latency in seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "body"
        data.write_bytes(body)
        log = Path(tmp) / "log"
        argv = ["h2load", "-n", str(n), "-d", str(data), "--log-file", str(log)]
        argv += ["--h1", "-c", str(c), "-m", "1"] if h1 else ["-c", "1", "-m", str(c)]
        for header in headers:
            argv += ["-H", header]
        argv.append(url)
        out = subprocess.run(
            pinned(CLIENT_CPU, argv), capture_output=True, text=True, check=True, timeout=900
        ).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        if done is None or int(done[2]) != n:
            raise RuntimeError(f"h2load did not complete every request:\n{out}")
        rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
        assert rate is not None, out
        latencies = [int(line.split("\t")[2]) / 1e6 for line in log.read_text().splitlines()]
    return float(rate[1]), latencies


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Upstream:
    """The fast fake upstream, in its own process on the client core."""

    def __init__(self, chunks: int, log: Path) -> None:
        self.port = free_port()
        argv = [sys.executable, str(ROOT / "bench" / "fast_upstream.py"), "--port", str(self.port)]
        argv += ["--chunks", str(chunks)]
        self.process = subprocess.Popen(
            pinned(CLIENT_CPU, argv), stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        wait_until(lambda: self.served() >= 0, "the fake upstream", 30)

    def served(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=5) as r:
            return int(r.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def openai_body(*, stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def first_http_event(port: int, path: str, headers: dict[str, str]) -> float:
    """Seconds from sending a streamed chat completion to the first content chunk's bytes."""
    body = openai_body(stream=True)
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    head += f"content-length: {len(body)}\r\nconnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        began = time.perf_counter()
        sock.sendall(head.encode() + body)
        seen = b""
        while b'"content":"tok' not in seen and b'"content": "tok' not in seen:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError(f"no content chunk in the stream: {seen[:500]!r}")
            seen += data
        took = time.perf_counter() - began
        while b"[DONE]" not in seen:  # read the rest, so the gateway finishes its call cleanly
            data = sock.recv(65536)
            if not data:
                break
            seen = seen[-16:] + data
    return took
