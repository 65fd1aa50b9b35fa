"""The OpenAI-compatible door and Connect against the gRPC door, on the same server and agent.

One Switchboard process (bench/bench.yaml: the mock model at zero latency, so the figures are
the gateway's own cost) is pinned to one core; h2load, pinned to the other, drives in turn:
gRPC ``Invoke`` over HTTP/2, ``POST /v1/chat/completions`` over HTTP/1.1 (uvicorn speaks
HTTP/1.1; one request at a time per connection, so concurrency is connections), and Connect
JSON ``Invoke`` over HTTP/1.1. Runs alternate; the table gives medians of req/s, latency and
the server's CPU time per call (user + system, read from /proc before and after each load:
unlike req/s it holds on a busy shared machine), and the cost per call relative to gRPC (the
door's CPU per call ÷ gRPC's: the issue's goal is ≤ 1.3). Nothing is asserted.

    .venv/bin/python bench/doors_bench.py [--runs 3] [--requests 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from switchboard.v1 import agent_pb2 as pb

from bench import ROOT, UNARY_WORDS, Result, free_port, pinned, request

TEXT = " ".join(f"w{i}" for i in range(UNARY_WORDS)) + " "
OPENAI = json.dumps({"model": "echo", "messages": [{"role": "user", "content": TEXT}]})
CONNECT = json.dumps(
    {"agent": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": TEXT}]}]}
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def switchboard() -> Iterator[tuple[str, str, int]]:
    port, http_port = free_port(), free_port()
    argv = [sys.executable, "-m", "service", "serve", "--config", str(ROOT / "bench/bench.yaml")]
    env = {**os.environ, "SWITCHBOARD_SERVER__PORT": str(port)}
    env["SWITCHBOARD_SERVER__HTTP__PORT"] = str(http_port)
    command = ["taskset", "-c", "0", *argv] if shutil.which("taskset") else argv
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        address, http = f"127.0.0.1:{port}", f"127.0.0.1:{http_port}"
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=120)  # a busy machine starts slowly
        check = urllib.request.Request(
            f"http://{http}/v1/chat/completions",
            data=OPENAI.encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(check, timeout=30) as answer:
            assert json.load(answer)["choices"][0]["message"]["content"] == TEXT
        yield address, http, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def h2load(url: str, body: bytes, headers: list[str], requests: int, c: int, h1: bool) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        data, log = Path(tmp) / "body", Path(tmp) / "log"
        data.write_bytes(body)
        # HTTP/1.1: one request in flight per connection, so c connections; h2: c streams.
        shape = ["--h1", "-c", str(c), "-m", "1"] if h1 else ["-c", "1", "-m", str(c)]
        argv = ["h2load", "-n", str(requests), *shape, "-d", str(data), "--log-file", str(log)]
        for header in headers:
            argv += ["-H", header]
        out = subprocess.run(
            pinned(1, [*argv, url]), capture_output=True, text=True, check=True, timeout=300
        ).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        if done is None or int(done[2]) != requests:
            raise RuntimeError(f"h2load did not complete every request:\n{out}")
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)[1])  # type: ignore[index]
        latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines())

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000

    return Result(rps, pct(0.50), pct(0.99))


def run(requests: int, concurrencies: list[int]) -> dict[str, tuple[Result, float]]:
    """``{"door c=N": (h2load's result, server CPU seconds per call)}``."""
    out: dict[str, tuple[Result, float]] = {}
    grpc_body = request(UNARY_WORDS, pb.InvokeRequest)
    with switchboard() as (address, http, pid):
        doors = {
            "grpc": (
                f"http://{address}/switchboard.v1.AgentService/Invoke",
                grpc_body,
                ["content-type: application/grpc", "te: trailers"],
                False,
            ),
            "openai": (
                f"http://{http}/v1/chat/completions",
                OPENAI.encode(),
                ["content-type: application/json"],
                True,
            ),
            "connect": (
                f"http://{http}/switchboard.v1.AgentService/Invoke",
                CONNECT.encode(),
                ["content-type: application/json"],
                True,
            ),
        }
        for url, body, headers, h1 in doors.values():  # warm-up
            h2load(url, body, headers, 200, 4, h1)
        for c in concurrencies:
            for door, (url, body, headers, h1) in doors.items():
                before = cpu_seconds(pid)
                result = h2load(url, body, headers, requests, c, h1)
                out[f"{door} c={c}"] = (result, (cpu_seconds(pid) - before) / requests)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,16")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench needs h2load: apt-get install nghttp2-client")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    runs = [run(args.requests, concurrencies) for _ in range(args.runs)]

    def median(key: str, field: str) -> float:
        return statistics.median(getattr(r[key][0], field) for r in runs)

    def cpu(key: str) -> float:
        return statistics.median(r[key][1] for r in runs)

    print("| door | concurrency | req/s | p50 / p99 ms | CPU µs per call | cost per call vs gRPC |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for c in concurrencies:
        base = cpu(f"grpc c={c}")
        for door in ("grpc", "openai", "connect"):
            key = f"{door} c={c}"
            print(
                f"| {door} | {c} | {median(key, 'rps'):.0f} | {median(key, 'p50_ms'):.2f} / "
                f"{median(key, 'p99_ms'):.2f} | {cpu(key) * 1e6:.0f} | {cpu(key) / base:.2f}x |"
            )


if __name__ == "__main__":
    main()
