"""Switchboard beside its peers on the provider path: LiteLLM proxy and the Portkey gateway,
all in front of one fast fake OpenAI upstream (bench/fast_upstream.py).

Each gateway runs pinned to core 0; the upstream and the load generators share core 1. The
peers are installed on first use into bench/data/ (git-ignored) from their registries, at
pinned versions: LiteLLM proxy into its own venv (pip), the Portkey gateway with npm.

Per gateway, in each of a few alternated runs (the gateways' order rotates between runs):

- requests per gateway CPU-second, non-streaming, 16 in flight (h2load; the CPU is the
  gateway process's user+system time from /proc, its children included);
- streams per gateway CPU-second, streaming ``--chunks`` chunks, 16 in flight;
- added latency at 1 in flight, p50 / p99: h2load's per-request times through the gateway
  less those straight to the upstream in the same run (non-streaming);
- added time to first streamed event at 1 in flight, p50: the first text delta through the
  gateway less the first content chunk straight from the upstream (a small blocking client).

Switchboard is called over gRPC (Invoke / Stream, framed for h2load; for the first event,
HTTP/2 frames on a raw socket: a client as light as the raw HTTP/1.1 one that times the HTTP
doors, the peers and the upstream, see bench/grpc_first_event.py); the peers over HTTP/1.1
(OpenAI's chat completions). The upstream counts what it served, and every h2load batch must
have reached it exactly once per request. Reported: medians over the runs. The machine is
small and shared: read the ratios within one run, not the absolute figures.

    .venv/bin/python bench/peers.py [--quick] [--runs 3] [--gateways switchboard,portkey,litellm]

Needs h2load (Debian: nghttp2-client), node and npm for Portkey.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from switchboard.v1 import agent_pb2 as pb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_first_event import GrpcFirstEvent
from peer_rigs import (
    CLIENT_CPU,
    DATA,
    GATEWAY_CPU,
    KEY,
    MODEL,
    ROOT,
    SYSTEM,
    USER,
    Figures,
    Gateway,
    Upstream,
    first_http_event,
    h2load,
    install_litellm,
    install_portkey,
    openai_body,
    pct,
    start,
    wait_until,
)

from bench import cpu_seconds, framed, free_port, source_tree

# --------------------------------------------------------------------------- the gateways


def messages_proto() -> list[pb.Message]:
    return [
        pb.Message(role=pb.ROLE_SYSTEM, content=[pb.ContentPart(text=SYSTEM)]),
        pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=USER)]),
    ]


def serve_switchboard(
    upstream: Upstream, logs: Path, name: str, ref: str, http_port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """Switchboard (from the working tree, or from git ``ref``, same venv) serving one agent
    per name, ``gpt`` and ``bench-model`` (what the OpenAI door's ``model`` names), both on
    one ``openai`` target at ``upstream``; its HTTP doors on ``http_port`` when given."""
    tree = source_tree(ref) if ref else ROOT
    port = free_port()
    http = f", http: {{port: {http_port}}}" if http_port else ""
    config = logs / f"{name}.yaml"
    config.write_text(
        f"""
auth: {{enabled: false}}
server: {{host: 127.0.0.1, port: {port}, grace_s: 2{http}}}
targets:
  gpt:
    provider: openai
    model: {MODEL}
    base_url: "{upstream.base_url}"
    api_key: {{env: BENCH_KEY}}
agents:
  gpt: {{route: [gpt]}}
  {MODEL}: {{route: [gpt]}}
"""
    )
    argv = [sys.executable, "-m", "service", "serve", "--config", str(config), "--port", str(port)]
    # ``-m service`` from ``tree``: its service package comes first on sys.path.
    return start(argv, env={"BENCH_KEY": KEY}, log=logs / f"{name}.log", cwd=tree), port


def switchboard_http(upstream: Upstream, logs: Path, ref: str = "") -> Gateway:
    """Switchboard's OpenAI-compatible door (HTTP/1.1, uvicorn), called as the peers are."""
    name = f"switchboard-http@{ref}" if ref else "switchboard-http"
    http_port = free_port()
    process, _ = serve_switchboard(upstream, logs, name, ref, http_port)
    return http_gateway(name, process, http_port, "/v1/chat/completions", {})


def switchboard(upstream: Upstream, logs: Path, ref: str = "") -> Gateway:
    """Switchboard's gRPC door, from the working tree or (``ref``) a git commit, same venv."""
    name = f"switchboard@{ref}" if ref else "switchboard"
    process, port = serve_switchboard(upstream, logs, name, ref)
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    invoke = channel.unary_unary("/switchboard.v1.AgentService/Invoke")
    unary_body = pb.InvokeRequest(agent="gpt", messages=messages_proto()).SerializeToString()
    stream_body = pb.StreamRequest(agent="gpt", messages=messages_proto()).SerializeToString()

    def ready() -> bool:
        reply = pb.InvokeResponse.FromString(invoke(unary_body, timeout=10))
        return reply.finish_reason == pb.FINISH_REASON_STOP

    wait_until(ready, name)
    headers = ["content-type: application/grpc", "te: trailers"]

    def load(path: str, body: bytes) -> Callable[[int, int], tuple[float, list[float]]]:
        url = f"http://{address}/switchboard.v1.AgentService/{path}"
        return lambda n, c: h2load(url, framed(body), headers, n, c, h1=False)

    # Not through grpc's Python client: its own wake-ups would count as the gateway's.
    timer = GrpcFirstEvent(port, "/switchboard.v1.AgentService/Stream")

    def first_event() -> float:
        return timer.first_event(stream_body)

    def answered_ok() -> int:  # from Switchboard's call log, one JSON line per call
        text = (logs / f"{name}.log").read_text(errors="replace")
        return text.count('"code": "OK"')

    return Gateway(
        name,
        process,
        load("Invoke", unary_body),
        load("Stream", stream_body),
        first_event,
        answered_ok,
    )


def http_gateway(
    name: str, process: subprocess.Popen[bytes], port: int, path: str, headers: dict[str, str]
) -> Gateway:
    url = f"http://127.0.0.1:{port}{path}"
    header_lines = ["content-type: application/json", *(f"{k}: {v}" for k, v in headers.items())]

    def ready() -> bool:
        request = urllib.request.Request(
            url,
            data=openai_body(stream=False),
            headers=dict(h.split(": ", 1) for h in header_lines),
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return "tok" in reply.read().decode()

    wait_until(ready, name, 180)

    def load(stream: bool) -> Callable[[int, int], tuple[float, list[float]]]:
        return lambda n, c: h2load(url, openai_body(stream=stream), header_lines, n, c, h1=True)

    return Gateway(
        name, process, load(False), load(True), lambda: first_http_event(port, path, headers)
    )


def portkey(upstream: Upstream, logs: Path) -> Gateway:
    script = install_portkey()
    port = free_port()
    process = start(
        ["node", str(script), f"--port={port}", "--headless"],
        env={"NODE_ENV": "production"},
        log=logs / "portkey.log",
    )
    headers = {
        "authorization": f"Bearer {KEY}",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": upstream.base_url,
    }
    return http_gateway("portkey", process, port, "/v1/chat/completions", headers)


def litellm(upstream: Upstream, logs: Path) -> Gateway:
    python = install_litellm()
    port = free_port()
    config = logs / "litellm.yaml"
    config.write_text(
        f"""
model_list:
  - model_name: {MODEL}
    litellm_params: {{model: "openai/{MODEL}", api_base: "{upstream.base_url}", api_key: "{KEY}"}}
"""
    )
    process = start(
        [
            str(python),
            "-c",
            "from litellm import run_server; run_server()",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            # no auth, as the other gateways here run without it
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        },
        log=logs / "litellm.log",
    )
    return http_gateway("litellm", process, port, "/v1/chat/completions", {})


# ------------------------------------------------------------------------------ measuring


def per_cpu(
    gateway: Gateway, upstream: Upstream, run: Callable[[], tuple[float, list[float]]], n: int
) -> tuple[float, float]:
    """(completed per gateway CPU-second, completed per wall second) for one batch of ``n``."""
    served = upstream.served()
    ok = gateway.answered_ok() if gateway.answered_ok is not None else 0
    cpu = cpu_seconds(gateway.process.pid)
    rps, _ = run()
    used = cpu_seconds(gateway.process.pid) - cpu
    reached = upstream.served() - served - 1  # less the count request itself
    if reached != n:
        raise RuntimeError(f"{gateway.name}: {n} requests, the upstream served {reached}")
    if gateway.answered_ok is not None and gateway.answered_ok() - ok != n:
        raise RuntimeError(f"{gateway.name}: {n} requests, {gateway.answered_ok() - ok} OK")
    return n / max(used, 1e-9), rps


def measure(
    gateway: Gateway,
    upstream: Upstream,
    baseline: list[float],
    base_first: float,
    size: dict[str, int],
) -> Figures:
    n, streams, lat, firsts = size["requests"], size["streams"], size["latency"], size["first"]
    gateway.unary(max(n // 10, 16), 16)  # warm-up
    out = Figures()
    out.unary_per_cpu_s, out.unary_rps = per_cpu(gateway, upstream, lambda: gateway.unary(n, 16), n)
    out.streams_per_cpu_s, _ = per_cpu(
        gateway, upstream, lambda: gateway.streams(streams, 16), streams
    )
    _, latencies = gateway.unary(lat, 1)
    out.p50_ms = (pct(latencies, 0.5) - pct(baseline, 0.5)) * 1000
    out.p99_ms = (pct(latencies, 0.99) - pct(baseline, 0.99)) * 1000
    out.ttfe_ms = (
        statistics.median(gateway.first_event() for _ in range(firsts)) - base_first
    ) * 1000
    return out


@contextlib.contextmanager
def running(
    builders: list[tuple[str, Callable[[Upstream, Path], Gateway]]], upstream: Upstream, logs: Path
) -> Iterator[list[Gateway]]:
    gateways: list[Gateway] = []
    try:
        for name, build in builders:
            print(f"starting {name}", file=sys.stderr)
            gateways.append(build(upstream, logs))
        yield gateways
    finally:
        for gateway in gateways:
            gateway.process.terminate()
        for gateway in gateways:
            try:
                gateway.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gateway.process.kill()


BUILDERS = {
    "switchboard": switchboard,
    "switchboard-http": switchboard_http,
    "portkey": portkey,
    "litellm": litellm,
}


def builder(name: str) -> Callable[[Upstream, Path], Gateway]:
    """``switchboard@REF`` runs Switchboard as of a git ref beside the working tree's."""
    kind, _, ref = name.partition("@")
    if ref and kind in ("switchboard", "switchboard-http"):
        return functools.partial(BUILDERS[kind], ref=ref)
    return BUILDERS[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 runs of small batches (< 3 min)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1500, help="non-streaming, per run")
    parser.add_argument("--chunks", type=int, default=50, help="content chunks per stream")
    parser.add_argument(
        "--gateways",
        default="switchboard,switchboard-http,portkey,litellm",
        help="any of switchboard (the gRPC door), switchboard-http (the OpenAI-compatible door), "
        "portkey, litellm, and switchboard@REF or switchboard-http@REF (a git ref: A/B runs)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="requests (and a third as many streams) each gateway serves before the first run, "
        "so a JIT (Portkey's V8) is measured warm: 6000 by default, 1500 with --quick",
    )
    parser.add_argument("--logs", default=str(DATA / "logs"), help="gateway logs and configs")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench needs h2load: apt-get install nghttp2-client")
    runs, n = (2, 300) if args.quick else (args.runs, args.requests)
    size = {
        "requests": n,
        "streams": max(n // 3, 32),
        "latency": max(n // 3, 100),
        "first": max(n // 30, 15),
    }
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    names = args.gateways.split(",")
    started = time.monotonic()
    upstream = Upstream(args.chunks, logs / "upstream.log")
    try:
        with running([(name, builder(name)) for name in names], upstream, logs) as gateways:
            direct = f"{upstream.base_url}/chat/completions"
            warm = args.warmup if args.warmup is not None else (1500 if args.quick else 6000)
            for gateway in gateways:
                # Steady state for all: Portkey's requests per CPU-second doubled over its
                # first few thousand calls (V8 optimising its hot paths); ours moved ~10 %.
                print(f"warming {gateway.name} up: {warm} requests", file=sys.stderr)
                gateway.unary(warm, 16)
                gateway.streams(max(warm // 3, 1), 16)
            for i in range(runs):
                _, baseline = h2load(
                    direct,
                    openai_body(stream=False),
                    ["content-type: application/json"],
                    size["latency"],
                    1,
                    h1=True,
                )
                base_first = statistics.median(
                    first_http_event(upstream.port, "/v1/chat/completions", {})
                    for _ in range(size["first"])
                )
                order = gateways[i % len(gateways) :] + gateways[: i % len(gateways)]
                for gateway in order:
                    gateway.runs.append(measure(gateway, upstream, baseline, base_first, size))
                    print(f"run {i + 1}/{runs} {gateway.name}: {gateway.runs[-1]}", file=sys.stderr)
    finally:
        upstream.stop()
    report(gateways, runs, size, args.chunks, time.monotonic() - started)


def report(
    gateways: list[Gateway], runs: int, size: dict[str, int], chunks: int, took: float
) -> None:
    def med(g: Gateway, name: str) -> float:
        return statistics.median(getattr(r, name) for r in g.runs)

    print(
        f"\nmedians of {runs} alternated runs ({size['requests']} requests, {size['streams']} "
        f"streams of {chunks} chunks, {size['latency']} latency samples, {size['first']} first "
        f"events per gateway and run); gateways on core {GATEWAY_CPU}, load and upstream on core "
        f"{CLIENT_CPU}; {took:.0f}s in all"
    )
    rows = [
        ("non-streaming requests per gateway CPU-second, c=16", "unary_per_cpu_s", "{:.1f}"),
        (f"streams ({chunks} chunks) per gateway CPU-second, c=16", "streams_per_cpu_s", "{:.1f}"),
        ("non-streaming requests per second (wall), c=16", "unary_rps", "{:.1f}"),
        ("added latency p50, c=1 (ms)", "p50_ms", "{:+.2f}"),
        ("added latency p99, c=1 (ms)", "p99_ms", "{:+.2f}"),
        ("added time to first streamed event p50, c=1 (ms)", "ttfe_ms", "{:+.2f}"),
    ]
    print("| " + " | ".join(["measure", *(g.name for g in gateways)]) + " |")
    print("|---" * (len(gateways) + 1) + "|")
    for label, name, fmt in rows:
        print("| " + " | ".join([label, *(fmt.format(med(g, name)) for g in gateways)]) + " |")
    by_name = {g.name: g for g in gateways}
    if "switchboard" in by_name:
        sb = by_name["switchboard"]
        for peer in gateways:
            if peer is sb:
                continue
            pairs = list(zip(sb.runs, peer.runs, strict=True))
            ratios = [
                f"{label.split(' per ')[0]} "
                f"{statistics.median(getattr(a, name) / getattr(b, name) for a, b in pairs):.2f}x"
                for label, name, _ in rows[:2]
            ]
            print(
                f"switchboard / {peer.name} per CPU-second (median of the runs' ratios): "
                + ", ".join(ratios)
            )


if __name__ == "__main__":
    main()
