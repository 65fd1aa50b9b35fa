"""Switchboard's memory: flat over many calls, and small per idle stream.

Two measures of one server process (``bench/bench.yaml``'s mock echo agent plus a slow
streaming agent, every default feature on), its resident set size read from /proc:

1. **Calls:** after a warm-up of ``--warmup`` unary calls, ``--calls`` more (h2load, 16 in
   flight) in ``--batches`` batches; the RSS after each batch. Flat means the last batches
   add nothing: reported are the growth from the first batch's end to the last's, in all
   and per 1,000 calls.
2. **Idle streams:** ``--streams`` Stream calls held open from another process (a few
   connections, each within the server's streams-per-connection limit), each one past its
   first text delta and waiting for the next (the mock streams a word every 1,000 s); the
   RSS before and after, per stream. Then they are cancelled, and the RSS once the server
   has let them go.

    .venv/bin/python bench/memory.py [--calls 200000] [--streams 2000]

Needs h2load (Debian: nghttp2-client). Nothing is asserted; the goals (docs/benchmarks.md)
are flat over 200,000 calls and under 40 KB an idle stream.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import UNARY_WORDS, free_port, h2load, request

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
auth: {{enabled: false}}
server: {{host: 127.0.0.1, port: {port}, grace_s: 2}}
transport: {{max_concurrent_calls: {calls}}}
state: {{data_dir: {data}}}
targets:
  mock-echo: {{provider: mock, model: echo}}
  mock-slow: {{provider: mock, model: echo, mock: {{tokens_per_s: 0.001}}}}
agents:
  echo: {{route: [mock-echo]}}
  slow: {{route: [mock-slow]}}
"""
PER_CONNECTION = 500  # streams per client connection (the server allows 1,000)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def calls(address: str, pid: int, args: argparse.Namespace) -> None:
    unary = request(UNARY_WORDS, pb.InvokeRequest)
    path = "/switchboard.v1.AgentService/Invoke"
    h2load(address, path, unary, args.warmup, 16)
    per_batch = args.calls // args.batches
    marks: list[int] = []
    began = time.monotonic()
    for i in range(args.batches):
        h2load(address, path, unary, per_batch, 16)
        marks.append(rss_kib(pid))
        print(f"  batch {i + 1}/{args.batches}: RSS {marks[-1] / 1024:.1f} MiB", file=sys.stderr)
    grown = marks[-1] - marks[0]
    print(
        f"calls: {args.warmup} warm-up, then {per_batch * args.batches} in {args.batches} "
        f"batches ({time.monotonic() - began:.0f}s); RSS after the first batch "
        f"{marks[0] / 1024:.1f} MiB, after the last {marks[-1] / 1024:.1f} MiB: "
        f"{grown:+d} KiB ({100 * grown / marks[0]:+.2f} %), "
        f"{grown / (per_batch * (args.batches - 1) / 1000):+.2f} KiB per 1,000 calls"
    )


async def idle_streams(address: str, pid: int, count: int) -> None:
    request_ = pb.StreamRequest(
        agent="slow",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="one two three")])],
    )
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range((count + PER_CONNECTION - 1) // PER_CONNECTION)
    ]
    stubs = [pb_grpc.AgentServiceStub(c) for c in channels]
    # Warm the path (and each connection) with a few streams first, then measure.
    await _open(stubs, request_, len(stubs))
    before = rss_kib(pid)
    calls = await _open(stubs, request_, count)
    held = rss_kib(pid)
    for call in calls:
        call.cancel()
    await asyncio.sleep(5)  # the server ends the cancelled handlers
    after = rss_kib(pid)
    for channel in channels:
        await channel.close()
    print(
        f"idle streams: {count} held open past their first text delta, over {len(channels)} "
        f"connections; RSS {before / 1024:.1f} MiB before, {held / 1024:.1f} MiB with them "
        f"open: {(held - before) / count:.1f} KiB per stream; {after / 1024:.1f} MiB after "
        "they were cancelled"
    )


async def _open(
    stubs: list[pb_grpc.AgentServiceStub], request_: pb.StreamRequest, count: int
) -> list[Any]:
    """``count`` streams over the stubs, each once its first text delta came."""
    calls = [stubs[i % len(stubs)].Stream(request_, timeout=3600) for i in range(count)]

    async def first_delta(call: Any) -> None:
        async for event in call:
            if event.WhichOneof("event") == "text_delta":
                return

    await asyncio.wait_for(asyncio.gather(*(first_delta(c) for c in calls)), 300)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--skip-calls", action="store_true")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("bench needs h2load: apt-get install nghttp2-client")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "memory.yaml"
        config.write_text(CONFIG.format(port=port, calls=args.streams + 100, data=tmp))
        argv = [sys.executable, "-m", "service", "serve", "--config", str(config)]
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            argv = ["taskset", "-c", "0", *argv]
        logs = ROOT / "bench" / "data" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / "memory-server.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "generated")}
        server = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        address = f"127.0.0.1:{port}"
        try:
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=120)
            print(f"server pid {server.pid}, RSS at start {rss_kib(server.pid) / 1024:.1f} MiB")
            if not args.skip_calls:
                calls(address, server.pid, args)
            asyncio.run(idle_streams(address, server.pid, args.streams))
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()


if __name__ == "__main__":
    main()
