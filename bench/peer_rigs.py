"""What bench/peers.py's runs are made of: the gateways' processes, h2load, the fast fake
upstream, the requests and the first-event timers (bench/provider_first_event.py uses them too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from switchboard.v1 import agent_pb2 as pb

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


class _Gone(Exception):
    """The server closed the connection, or went away before taking the stream."""


class GrpcFirstEvent:
    """Times a gRPC Stream's first text delta with a client as light as
    :func:`first_http_event`'s, which times the HTTP doors, the peers and the upstream itself:
    HTTP/2 frames written and read on one blocking socket (kept open, as a gRPC channel keeps
    its connection; opened anew after the server's GOAWAY, as when
    ``transport.max_connection_age_s`` is up), no gRPC library.

    grpc's synchronous Python client hands every event between its C core's thread and the
    caller's: on a quiet machine (the first-event goal's condition) those wake-ups cost
    0.2-0.35 ms of its own per first event through Switchboard (+1.09 against +0.75 ms over
    the upstream, 6 alternated rounds), counted as the gateway's; under load they mostly
    overlap the server's work (docs/benchmarks.md, "The gRPC door's first event").
    """

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
    END_STREAM = ACK = 0x1
    END_HEADERS = 0x4
    MAX_WINDOW = 2**31 - 1

    def __init__(self, port: int, path: str) -> None:
        self._port = port
        # HPACK (RFC 7541): static-table entries (:method POST 3, :scheme http 6) and literal
        # values without indexing, so nothing depends on a dynamic table.
        self._headers = b"\x83\x86" + b"".join(
            self._literal(index, value)
            for index, value in ((4, path), (1, f"127.0.0.1:{port}"), (31, "application/grpc"))
        )
        self._headers += b"\x00\x02te\x08trailers"
        self._sock: socket.socket | None = None
        self._stream = 1
        self._buffer = b""
        self._going = False  # the server sent GOAWAY: a new connection for the next stream

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Windows as large as HTTP/2 allows, so flow control never holds the server back.
        initial_window = struct.pack(">HI", 0x4, self.MAX_WINDOW)
        more = struct.pack(">I", self.MAX_WINDOW - 65_535)
        sock.sendall(
            self.PREFACE
            + self._frame(self.SETTINGS, 0, 0, initial_window)
            + self._frame(self.WINDOW_UPDATE, 0, 0, more)
        )
        self._sock, self._stream, self._buffer, self._going = sock, 1, b"", False
        return sock

    @staticmethod
    def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
        head = struct.pack(">I", len(payload))[1:] + bytes((kind, flags))
        return head + struct.pack(">I", stream) + payload

    @staticmethod
    def _literal(name_index: int, value: str) -> bytes:
        raw = value.encode()
        assert len(raw) < 127, value  # one-byte length
        name = bytes((name_index,)) if name_index < 15 else bytes((15, name_index - 15))
        return name + bytes((len(raw),)) + raw

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, int, bytes]:
        while len(self._buffer) < 9 or len(self._buffer) < 9 + int.from_bytes(
            self._buffer[:3], "big"
        ):
            data = sock.recv(65536)
            if not data:
                raise _Gone
            self._buffer += data
        size = int.from_bytes(self._buffer[:3], "big")
        kind, flags = self._buffer[3], self._buffer[4]
        stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFF_FFFF
        payload, self._buffer = self._buffer[9 : 9 + size], self._buffer[9 + size :]
        return kind, flags, stream, payload

    def first_event(self, request: bytes) -> float:
        """Seconds from sending ``request`` (a serialized StreamRequest) to the first
        StreamResponse with a text delta; the rest of the stream is read to its end. A
        stream the server did not take (it closed the connection, or went away first) is
        sent once more on a new connection."""
        for _ in range(2):
            try:
                return self._timed(request)
            except _Gone:
                self.close()
        raise RuntimeError("the gRPC server closed two connections in a row")

    def _timed(self, request: bytes) -> float:
        sock = self._sock if self._sock is not None and not self._going else self._connect()
        stream, self._stream = self._stream, self._stream + 2
        message = b"\x00" + struct.pack(">I", len(request)) + request
        took, received, pending = 0.0, 0, b""
        began = time.perf_counter()
        sock.sendall(
            self._frame(self.HEADERS, self.END_HEADERS, stream, self._headers)
            + self._frame(self.DATA, self.END_STREAM, stream, message)
        )
        while True:
            kind, flags, on, payload = self._read_frame(sock)
            if kind == self.SETTINGS and not flags & self.ACK:
                sock.sendall(self._frame(self.SETTINGS, self.ACK, 0))
            elif kind == self.PING and not flags & self.ACK:
                sock.sendall(self._frame(self.PING, self.ACK, 0, payload))
            elif kind == self.GOAWAY:
                self._going = True
                if stream > int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF:
                    raise _Gone  # not taken: the caller sends it again
            elif on == stream and kind == self.RST_STREAM:
                raise RuntimeError(f"the gRPC server reset the stream: {payload!r}")
            elif on == stream and kind == self.DATA:
                received += len(payload)
                pending += payload
                while len(pending) >= 5 + (size := int.from_bytes(pending[1:5], "big")):
                    event, pending = pending[5 : 5 + size], pending[5 + size :]
                    if not took and pb.StreamResponse.FromString(event).HasField("text_delta"):
                        took = time.perf_counter() - began
            if on == stream and kind in {self.DATA, self.HEADERS} and flags & self.END_STREAM:
                break  # the trailers (or, after an error, trailers only)
        if received:
            sock.sendall(self._frame(self.WINDOW_UPDATE, 0, 0, struct.pack(">I", received)))
        if not took:
            raise RuntimeError("the stream ended without a text delta")
        return took

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
