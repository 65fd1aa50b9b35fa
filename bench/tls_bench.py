"""What TLS costs per call: the same server and agent served plaintext and with ``server.tls``.

One Switchboard process (bench/bench.yaml: the mock model at zero latency, so the figures are
the gateway's own cost) is pinned to one core; h2load, pinned to the other, drives gRPC
``Invoke`` over HTTP/2 and the OpenAI door over HTTP/1.1, first in plaintext, then over TLS
(certificates from deploy/tls/make-certs.sh; h2load keeps its connections, so the handshake is
paid once per connection, as it is for real clients). Runs alternate plaintext and TLS; the
table gives medians and the cost per call of TLS relative to plaintext (plaintext req/s ÷ TLS
req/s). Nothing is asserted.

    .venv/bin/python bench/tls_bench.py [--runs 3] [--requests 3000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doors_bench import OPENAI, h2load
from switchboard.v1 import agent_pb2 as pb

from bench import ROOT, UNARY_WORDS, Result, free_port, request


@contextlib.contextmanager
def switchboard(certs: Path | None) -> Iterator[tuple[str, str]]:
    """The bench server (TLS with ``certs``); yields the gRPC and HTTP base URLs."""
    port, http_port = free_port(), free_port()
    argv = [sys.executable, "-m", "service", "serve", "--config", str(ROOT / "bench/bench.yaml")]
    env = {**os.environ, "SWITCHBOARD_SERVER__PORT": str(port)}
    env["SWITCHBOARD_SERVER__HTTP__PORT"] = str(http_port)
    if certs is not None:
        env["SWITCHBOARD_SERVER__TLS__CERT_FILE"] = str(certs / "tls.crt")
        env["SWITCHBOARD_SERVER__TLS__KEY_FILE"] = str(certs / "tls.key")
    command = ["taskset", "-c", "0", *argv] if shutil.which("taskset") else argv
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    scheme = "http" if certs is None else "https"
    try:
        address = f"127.0.0.1:{port}"
        if certs is None:
            channel = grpc.insecure_channel(address)
        else:
            creds = grpc.ssl_channel_credentials((certs / "ca.crt").read_bytes())
            channel = grpc.secure_channel(address, creds)
        with channel:
            grpc.channel_ready_future(channel).result(timeout=60)
        yield f"{scheme}://{address}", f"{scheme}://127.0.0.1:{http_port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def run(certs: Path | None, requests: int, concurrencies: list[int]) -> dict[str, Result]:
    out: dict[str, Result] = {}
    grpc_body = request(UNARY_WORDS, pb.InvokeRequest)
    with switchboard(certs) as (grpc_url, http_url):
        doors = {
            "grpc": (
                f"{grpc_url}/switchboard.v1.AgentService/Invoke",
                grpc_body,
                ["content-type: application/grpc", "te: trailers"],
                False,
            ),
            "openai": (
                f"{http_url}/v1/chat/completions",
                OPENAI.encode(),
                ["content-type: application/json"],
                True,
            ),
        }
        for url, body, headers, h1 in doors.values():  # warm-up
            h2load(url, body, headers, 200, 4, h1)
        for c in concurrencies:
            for door, (url, body, headers, h1) in doors.items():
                out[f"{door} c={c}"] = h2load(url, body, headers, requests, c, h1)
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
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp)
        subprocess.run(
            ["bash", str(ROOT / "deploy/tls/make-certs.sh"), str(certs)],
            check=True,
            capture_output=True,
        )
        runs: dict[str, list[dict[str, Result]]] = {"plaintext": [], "tls": []}
        for _ in range(args.runs):
            runs["plaintext"].append(run(None, args.requests, concurrencies))
            runs["tls"].append(run(certs, args.requests, concurrencies))

    def median(kind: str, key: str, field: str) -> float:
        return statistics.median(getattr(r[key], field) for r in runs[kind])

    print("| door | concurrency | plaintext req/s | TLS req/s | TLS p50 / p99 ms | cost per call |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for c in concurrencies:
        for door in ("grpc", "openai"):
            key = f"{door} c={c}"
            plain, tls = median("plaintext", key, "rps"), median("tls", key, "rps")
            print(
                f"| {door} | {c} | {plain:.0f} | {tls:.0f} | {median('tls', key, 'p50_ms'):.2f} / "
                f"{median('tls', key, 'p99_ms'):.2f} | {plain / tls:.2f}x |"
            )


if __name__ == "__main__":
    main()
