"""Heavy input and the event loop: does a big prompt starve other calls and health probes?

Starts ``switchboard serve`` in a subprocess (the default agents on the mock provider,
embedded state) and, from this process, sends ``--calls`` concurrent Invokes whose prompt is
``--mb`` megabytes of words, while probing grpc.health.v1 Check every 20 ms. Reports the
probe latency idle and under that load (p50 / p99 / max, ms), the calls' wall time, and the
server's CPU seconds for them (from /proc). ``--profile`` instead runs one big Invoke
in-process under cProfile and prints where the time goes.

    .venv/bin/python bench/heavy_input.py [--mb 3] [--calls 8] [--guards] [--profile]

``--guards`` puts input guards on the agent (pii, secrets, denied terms, prompt injection),
so the big prompts are also scanned by them.

Nothing is asserted: the machine is small and shared; compare runs made one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import signal
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated"), str(ROOT / "clients" / "python")]

from switchboard.v1 import agent_pb2 as pb  # noqa: E402
from switchboard_client import AsyncClient  # noqa: E402

from tests.harness import serve_config  # noqa: E402
from tests.processes import serve_process  # noqa: E402

CONFIG = """
auth: {enabled: false}
server: {max_receive_message_bytes: 67108864}
state: {backend: embedded, data_dir: data}
observability: {logs: {format: json, calls: true, level: WARNING}}
targets:
  mock-echo: {provider: mock, model: echo}
agents:
  echo: {route: [mock-echo], parameters: {max_tokens: 512}, accepts_caller_tools: true}
"""
GUARDS = """
guards:
  pii: {kind: pii, action: redact}
  secrets: {kind: secrets, action: block}
  words: {kind: denied_terms, terms: [falcon, eagle], action: redact}
  inject: {kind: prompt_injection, action: block}
"""
CHANNEL = [("grpc.max_send_message_length", 64 * 1024 * 1024)]


def prompt(mb: float) -> str:
    word = "lorem "
    return word * int(mb * 1024 * 1024 / len(word))


def request_kw(shape: str, mb: float, seed: int) -> tuple[object, dict[str, object]]:
    """(conversation, keyword arguments) for ``client.invoke`` of one heavy request.

    ``words``: one user message of ``mb`` MB of words. ``parts``: as many 1 KB text parts
    (a few thousand, in 500 messages). ``schemas``: 4 caller tools of distinct 60 KiB
    schemas (new to the server, so each is checked against the metaschema).
    """
    if shape == "words":
        return prompt(mb), {}
    if shape == "parts":
        part = pb.ContentPart(text="lorem " * 170)
        per_message = max(1, int(mb * 1024 / 500))
        message = pb.Message(role=pb.ROLE_USER, content=[part] * per_message)
        return [message] * 500, {}
    tools = []
    for t in range(4):
        tool = pb.Tool(name=f"t{t}")
        properties = {f"p{seed}_{t}_{i}": {"type": "string", "maxLength": i} for i in range(1000)}
        tool.parameters.update({"type": "object", "properties": properties})
        tools.append(tool)
    return "hi", {"tools": tools}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def probe(channel: grpc.aio.Channel, stop: asyncio.Event) -> list[float]:
    stub = health_pb2_grpc.HealthStub(channel)
    latencies = []
    while not stop.is_set():
        began = time.perf_counter()
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=60)
        latencies.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(0.02)
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"p50 {statistics.median(ordered):7.1f}  p99 {p99:7.1f}  max {ordered[-1]:7.1f} ms"
        f"  ({len(ordered)} probes)"
    )


def load(address: str, mb: float, calls: int, shape: str) -> None:
    """The big calls, from a process of their own: building and sending 8 big requests
    would otherwise stall this process's loop and show as probe latency."""

    async def run() -> None:
        shaped = [request_kw(shape, mb, seed) for seed in range(calls)]
        async with grpc.aio.insecure_channel(address, options=CHANNEL) as channel:
            client = AsyncClient(address, channel=channel)
            requests = [
                client.invoke("echo", conversation, timeout=300, **kw)  # type: ignore[arg-type]
                for conversation, kw in shaped
            ]
            await asyncio.gather(*requests)

    asyncio.run(run())


async def measure(port: int, pid: int, mb: float, calls: int, shape: str) -> None:
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        await AsyncClient(address, channel=channel).invoke("echo", "warm up")
        stop = asyncio.Event()
        idle = asyncio.create_task(probe(channel, stop))
        await asyncio.sleep(1.0)
        stop.set()
        print(f"health, idle:                  {summary(await idle)}")

        stop = asyncio.Event()
        loaded = asyncio.create_task(probe(channel, stop))
        cpu = cpu_s(pid)
        began = time.perf_counter()
        worker = multiprocessing.get_context("spawn").Process(
            target=load, args=(address, mb, calls, shape)
        )
        worker.start()
        await asyncio.to_thread(worker.join)
        wall = time.perf_counter() - began
        cpu = cpu_s(pid) - cpu
        stop.set()
        print(f"health, {calls} x {mb:g} MB {shape}:   {summary(await loaded)}")
    print(f"the {calls} calls: {wall:.2f} s wall (with the loader's start), server CPU {cpu:.2f} s")


async def profile(mb: float) -> None:
    text = prompt(mb)
    async with serve_config(CONFIG) as served:
        channel = grpc.aio.insecure_channel(served.address, options=CHANNEL)
        client = AsyncClient(served.address, channel=channel)
        await client.invoke("echo", "warm up")
        profiler = cProfile.Profile()
        profiler.enable()
        await client.invoke("echo", text, timeout=300)
        profiler.disable()
        await channel.close()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=3.0)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--shape", choices=["words", "parts", "schemas"], default="words")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--guards", action="store_true", help="input guards on the agent")
    parser.add_argument(
        "--py-spy", metavar="OUT", help="record the server with py-spy (collapsed stacks)"
    )
    args = parser.parse_args()
    if args.profile:
        asyncio.run(profile(args.mb))
        return
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "switchboard.yaml"
        text = textwrap.dedent(CONFIG)
        if args.guards:
            text = text.replace(
                "accepts_caller_tools: true}",
                "accepts_caller_tools: true, guards: {input: [pii, secrets, words, inject]}}",
            ) + textwrap.dedent(GUARDS)
        config.write_text(text)
        wrapper = (
            ["py-spy", "record", "--format", "raw", "--rate", "200", "-o", args.py_spy, "--"]
            if args.py_spy
            else []
        )
        with serve_process(config, wrapper=wrapper) as server:
            asyncio.run(measure(server.port, server.process.pid, args.mb, args.calls, args.shape))
            if args.py_spy:
                server.process.send_signal(signal.SIGINT)
                server.process.wait(timeout=60)


if __name__ == "__main__":
    main()
