"""Switchboard against a bare grpc.aio server, on loopback, measured with h2load.

For each of a few alternated runs, each server is started pinned to one core (taskset) and
h2load, pinned to the other, sends framed gRPC requests over one connection with 1, 16 and 64
concurrent streams. Reported: unary requests/s with p50/p99 latency, and streamed chunks/s;
the medians over the runs, and the ratio Switchboard / bare. Nothing is asserted: this machine
is small and shared, so read the ratios, not the absolute figures.

    .venv/bin/python bench/bench.py [--runs 3] [--requests 4000]

Needs h2load (Debian: nghttp2-client).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from switchboard.v1 import agent_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
UNARY_WORDS = 8
STREAM_WORDS = 32


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def framed(message: bytes) -> bytes:
    """One gRPC length-prefixed message: no compression flag, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def request(words: int, kind: type[pb.InvokeRequest] | type[pb.StreamRequest]) -> bytes:
    text = " ".join(f"w{i}" for i in range(words)) + " "
    msg = kind(
        agent="echo",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])],
    )
    return framed(msg.SerializeToString())


def pinned(cpu: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *argv]
    return argv


@contextlib.contextmanager
def server(kind: str, workers: int) -> Iterator[str]:
    port = free_port()
    if kind == "bare":
        argv = [
            sys.executable,
            str(ROOT / "bench" / "bare_server.py"),
            "--port",
            str(port),
            "--unary-words",
            str(UNARY_WORDS),
            "--stream-words",
            str(STREAM_WORDS),
        ]
    else:
        argv = [
            sys.executable,
            "-m",
            "service",
            "serve",
            "--config",
            str(ROOT / "bench" / "bench.yaml"),
            "--port",
            str(port),
        ]
        if workers > 1:
            argv += ["--workers", str(workers)]
    cpus = "0" if workers == 1 else "0-1"
    command = ["taskset", "-c", cpus, *argv] if shutil.which("taskset") else argv
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            check = channel.unary_unary("/switchboard.v1.AgentService/Invoke")
            reply = pb.InvokeResponse.FromString(check(request(UNARY_WORDS, pb.InvokeRequest)[5:]))
            assert reply.finish_reason == pb.FINISH_REASON_STOP, reply
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def h2load(address: str, path: str, body: bytes, requests: int, streams: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "body"
        data.write_bytes(body)
        log = Path(tmp) / "log"
        argv = pinned(
            1,
            [
                "h2load",
                "-n",
                str(requests),
                "-c",
                "1",
                "-m",
                str(streams),
                "-d",
                str(data),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--log-file",
                str(log),
                f"http://{address}{path}",
            ],
        )
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        if done is None or int(done[2]) != requests:
            raise RuntimeError(f"h2load did not complete every request:\n{out}")
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)[1])  # type: ignore[index]
        latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines())

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000

    return Result(rps, pct(0.50), pct(0.99))


def measure(kind: str, requests: int, concurrencies: list[int], workers: int) -> dict[str, Result]:
    out: dict[str, Result] = {}
    unary = request(UNARY_WORDS, pb.InvokeRequest)
    stream = request(STREAM_WORDS, pb.StreamRequest)
    with server(kind, workers) as address:
        h2load(address, "/switchboard.v1.AgentService/Invoke", unary, 200, 8)  # warm-up
        for c in concurrencies:
            out[f"unary c={c}"] = h2load(
                address, "/switchboard.v1.AgentService/Invoke", unary, requests, c
            )
        out["stream c=16"] = h2load(
            address, "/switchboard.v1.AgentService/Stream", stream, requests // 4, 16
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--workers", type=int, default=1, help="Switchboard worker processes")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench needs h2load: apt-get install nghttp2-client")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    runs: dict[str, list[dict[str, Result]]] = {"bare": [], "switchboard": []}
    started = time.monotonic()
    for i in range(args.runs):  # alternate, so drift on a shared machine hits both alike
        for kind in ("bare", "switchboard") if i % 2 == 0 else ("switchboard", "bare"):
            runs[kind].append(measure(kind, args.requests, concurrencies, args.workers))
            print(f"run {i + 1}/{args.runs} {kind} done", file=sys.stderr)

    def median(kind: str, scenario: str, field: str) -> float:
        return statistics.median(getattr(r[scenario], field) for r in runs[kind])

    print(
        f"\nmedians of {args.runs} alternated runs, {args.requests} requests each, "
        f"switchboard workers={args.workers}, {time.monotonic() - started:.0f}s in all"
    )
    print(
        f"{'scenario':<14}{'bare rps':>10}{'sb rps':>10}{'ratio':>7}"
        f"{'bare p50':>10}{'sb p50':>9}{'bare p99':>10}{'sb p99':>9}  (ms)"
    )
    for scenario in runs["bare"][0]:
        b, s = (median(k, scenario, "rps") for k in ("bare", "switchboard"))
        row = f"{scenario:<14}{b:>10.0f}{s:>10.0f}{s / b:>7.2f}"
        for field in ("p50_ms", "p99_ms"):
            row += f"{median('bare', scenario, field):>10.2f}"
            row += f"{median('switchboard', scenario, field):>9.2f}"
        print(row)
    chunks = STREAM_WORDS + 3
    b, s = (median(k, "stream c=16", "rps") * chunks for k in ("bare", "switchboard"))
    print(
        f"streamed chunks/s (c=16, {chunks} events a stream): bare {b:.0f}, "
        f"switchboard {s:.0f}, ratio {s / b:.2f}"
    )


if __name__ == "__main__":
    main()
