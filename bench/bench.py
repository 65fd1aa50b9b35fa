"""Switchboard against a bare grpc.aio server, on loopback, measured with h2load.

For each of a few alternated runs, each server is started pinned to one core (taskset) and
h2load, pinned to the other, sends framed gRPC requests over one connection with 1, 16 and 64
concurrent streams, then a raw HTTP/2 client (bench/grpc_first_event.py) times the first text
delta of Streams sent one at a time. Reported: unary requests/s with p50/p99 latency, calls per
server CPU-second (the server process's user+system time from /proc, so other load on the
machine moves it less than the wall-clock rate), streams per second and per CPU-second, and the
time to the first streamed text; the medians over the runs, and the ratios Switchboard / bare.
Nothing is asserted: this machine is small and shared, so read the ratios, not the absolute
figures.

``--ref REF`` (repeatable) adds Switchboard as of a git ref beside the working tree's, for A/B
runs in one go (its ``service`` package unpacked under bench/data, same venv).

    .venv/bin/python bench/bench.py [--runs 3] [--requests 4000] [--ref main]

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
from grpc_first_event import GrpcFirstEvent
from switchboard.v1 import agent_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
UNARY_WORDS = 8
STREAM_WORDS = 32


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    per_cpu_s: float = 0.0  # completed calls per server CPU-second


def first_events(address: str, body: bytes, count: int) -> Result:
    """``count`` Streams one after another, timed by a raw HTTP/2 client (grpc's own Python
    client would add its thread wake-ups, more to a server that answers at once than to one
    that takes longer: bench/grpc_first_event.py): the p50 / p99 time from sending to the
    first text delta (``p50_ms`` / ``p99_ms``)."""
    timer = GrpcFirstEvent(int(address.rpartition(":")[2]), "/switchboard.v1.AgentService/Stream")
    try:
        took = sorted(timer.first_event(body[5:]) * 1000 for _ in range(count))
    finally:
        timer.close()
    return Result(0.0, took[len(took) // 2], took[min(len(took) - 1, int(0.99 * len(took)))])


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live descendant (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in family:
                family.add(child)
                frontier.append(child)
    total = 0.0
    for member in family:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (Path("/proc") / str(member) / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def source_tree(ref: str) -> Path:
    """Switchboard's source as of git ``ref``, unpacked under bench/data (for A/B runs)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", ref],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = DATA / f"tree-{sha}"
    if not (tree / "service").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "service"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


@contextlib.contextmanager
def server(kind: str, workers: int, logs: Path) -> Iterator[tuple[str, int]]:
    """``kind``: bare, switchboard, or switchboard@REF. Yields (address, pid)."""
    port = free_port()
    cwd = ROOT
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
        if "@" in kind:  # ``-m service`` from the tree: its package comes first on sys.path
            cwd = source_tree(kind.partition("@")[2])
        config = str(ROOT / "bench" / "bench.yaml")
        argv = [sys.executable, "-m", "service", "serve", "--config", config, "--port", str(port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
    cpus = "0" if workers == 1 else "0-1"
    command = ["taskset", "-c", cpus, *argv] if shutil.which("taskset") else argv
    log = (logs / f"{kind.replace('/', '_')}.log").open("ab")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'generated'}"}
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=120)
            check = channel.unary_unary("/switchboard.v1.AgentService/Invoke")
            reply = pb.InvokeResponse.FromString(check(request(UNARY_WORDS, pb.InvokeRequest)[5:]))
            assert reply.finish_reason == pb.FINISH_REASON_STOP, reply
        yield address, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def h2load(
    address: str, path: str, body: bytes, requests: int, streams: int, connections: int = 1
) -> Result:
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
                str(connections),
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
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900).stdout
        done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
        if done is None or int(done[2]) != requests:
            raise RuntimeError(f"h2load did not complete every request:\n{out}")
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)[1])  # type: ignore[index]
        latencies = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines())

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000

    return Result(rps, pct(0.50), pct(0.99))


def timed(pid: int, *args: object) -> Result:
    """:func:`h2load` with the server's CPU time over the batch."""
    before = cpu_seconds(pid)
    result = h2load(*args)  # type: ignore[arg-type]
    used = cpu_seconds(pid) - before
    result.per_cpu_s = args[3] / max(used, 1e-9)  # type: ignore[operator]
    return result


def measure(
    kind: str, requests: int, concurrencies: list[int], workers: int, connections: int, logs: Path
) -> dict[str, Result]:
    out: dict[str, Result] = {}
    unary = request(UNARY_WORDS, pb.InvokeRequest)
    stream = request(STREAM_WORDS, pb.StreamRequest)
    invoke, streamed = "/switchboard.v1.AgentService/Invoke", "/switchboard.v1.AgentService/Stream"
    with server(kind, workers, logs) as (address, pid):
        h2load(address, invoke, unary, 200, 8)  # warm-up
        for c in concurrencies:
            out[f"unary c={c}"] = timed(pid, address, invoke, unary, requests, c, connections)
        out["stream c=16"] = timed(pid, address, streamed, stream, requests // 4, 16, connections)
        out["first event"] = first_events(address, stream, max(requests // 20, 50))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--workers", type=int, default=1, help="Switchboard worker processes")
    parser.add_argument(
        "--connections",
        type=int,
        default=1,
        help="h2load connections, each with the given streams; the kernel spreads connections "
        "(not calls) over workers, so use at least as many as --workers",
    )
    parser.add_argument(
        "--ref", action="append", default=[], help="also run Switchboard as of this git ref"
    )
    parser.add_argument(
        "--no-tree",
        action="store_true",
        help="leave out the working tree's Switchboard (with --ref: snapshots only, so the "
        "tree can change while the bench runs)",
    )
    parser.add_argument("--logs", default=str(DATA / "logs"), help="the servers' logs")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench needs h2load: apt-get install nghttp2-client")
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    kinds = ["bare", *([] if args.no_tree else ["switchboard"])]
    kinds += [f"switchboard@{ref}" for ref in args.ref]
    runs: dict[str, list[dict[str, Result]]] = {kind: [] for kind in kinds}
    started = time.monotonic()
    for i in range(args.runs):  # alternate, so drift on a shared machine hits all alike
        for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
            runs[kind].append(
                measure(kind, args.requests, concurrencies, args.workers, args.connections, logs)
            )
            print(f"run {i + 1}/{args.runs} {kind} done", file=sys.stderr)
    report(runs, args, time.monotonic() - started)


def report(runs: dict[str, list[dict[str, Result]]], args: argparse.Namespace, took: float) -> None:
    def median(kind: str, scenario: str, field: str) -> float:
        return statistics.median(getattr(r[scenario], field) for r in runs[kind])

    def ratio(kind: str, scenario: str, field: str) -> float:
        """The median of the runs' ratios to bare (each run's pair measured close in time)."""
        pairs = zip(runs[kind], runs["bare"], strict=True)
        return statistics.median(getattr(a[scenario], field) / getattr(b[scenario], field)
                                 for a, b in pairs)  # fmt: skip

    print(
        f"\nmedians of {args.runs} alternated runs, {args.requests} requests each, "
        f"switchboard workers={args.workers}, connections={args.connections}, "
        f"{took:.0f}s in all; ratio = median of the runs' ratios to bare"
    )
    print(
        f"{'server':<22}{'scenario':<13}{'req/s':>8}{'ratio':>7}{'per CPU-s':>11}{'ratio':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}"
    )
    for scenario in runs["bare"][0]:
        if scenario == "first event":
            continue
        for kind in runs:
            row = f"{kind:<22}{scenario:<13}{median(kind, scenario, 'rps'):>8.0f}"
            row += f"{ratio(kind, scenario, 'rps'):>7.2f}"
            row += f"{median(kind, scenario, 'per_cpu_s'):>11.0f}"
            row += f"{ratio(kind, scenario, 'per_cpu_s'):>7.2f}"
            row += (
                f"{median(kind, scenario, 'p50_ms'):>9.2f}{median(kind, scenario, 'p99_ms'):>9.2f}"
            )
            print(row)
    chunks = STREAM_WORDS + 3
    print(f"streams carry {chunks} events each (rates above are streams; x{chunks} for chunks)")
    base = median("bare", "first event", "p50_ms")
    for kind in runs:
        p50, p99 = (median(kind, "first event", f) for f in ("p50_ms", "p99_ms"))
        print(
            f"{kind:<22}first text delta of a Stream at c=1: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            + (f" (added: {p50 - base:+.2f} ms p50)" if kind != "bare" else "")
        )


if __name__ == "__main__":
    main()
