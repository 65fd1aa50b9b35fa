"""Resilience figures against mock targets through the real server (loopback only).

1. Slow tail: p50/p99 latency of Invoke with and without hedging, against targets whose
   time to first token is heavy-tailed (most calls fast, a few very slow).
2. Full outage under load: upstream attempts per caller call (retry budget, breakers).
3. Flaky targets (529 overloads on a share of calls): success rate with and without the
   retry/fallback policy.

Run: .venv/bin/python bench/hedge_bench.py [--calls 400] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

from switchboard_client import AsyncClient, SwitchboardError

from service.app import App
from service.config import load
from service.providers.mock import MockProvider


@contextlib.asynccontextmanager
async def serve(yaml_text: str) -> AsyncIterator[tuple[App, AsyncClient]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        # Loopback only, so auth may be off: the bench measures routing, not keys.
        path.write_text("auth: {enabled: false}\n" + textwrap.dedent(yaml_text))
        app = App(load(path, {}))
        port = await app.start("127.0.0.1", 0)
        client = AsyncClient(f"127.0.0.1:{port}")
        try:
            yield app, client
        finally:
            await client.close()
            await app.stop(1.0)


async def run(
    client: AsyncClient, calls: int, concurrency: int, timeout: float = 30
) -> tuple[list[float], int, int]:
    """Latencies of the successful calls, the number of failures, total attempts reported."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures = 0
    attempts = 0

    async def one(i: int) -> None:
        nonlocal failures, attempts
        async with gate:
            t0 = time.perf_counter()
            try:
                answer = await client.invoke("bot", f"call {i}", timeout=timeout)
            except SwitchboardError:
                failures += 1
                return
            latencies.append(time.perf_counter() - t0)
            attempts += answer.attempts

    await asyncio.gather(*(one(i) for i in range(calls)))
    return latencies, failures, attempts


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def started(app: App) -> int:
    return sum(p.stats.started for p in app.providers.values() if isinstance(p, MockProvider))


TAIL = """
targets:
  a: {provider: mock, model: echo, mock: {seed: 1, ttft_s: 0.02, tail_rate: 0.03, tail_ttft_s: 1.0}}
  b: {provider: mock, model: echo, mock: {seed: 2, ttft_s: 0.02, tail_rate: 0.03, tail_ttft_s: 1.0}}
agents:
  bot:
    route: {targets: [a, b] %s}
"""


async def slow_tail(calls: int, concurrency: int) -> None:
    print("## Slow tail: 3% of first tokens take 1 s instead of 20 ms")
    print("| policy | p50 ms | p99 ms | upstream attempts per call |")
    print("|---|---:|---:|---:|")
    for label, hedge in (
        ("no hedging", ""),
        ("hedge after 100 ms to the next target", ", hedge: {delay_s: 0.1, to: next}"),
        ("hedge after the observed p95", ", hedge: {delay_s: p95, min_delay_s: 0.03}"),
    ):
        async with serve(TAIL % hedge) as (app, client):
            await run(client, 40, concurrency)  # warm up (and fill the latency window)
            before = started(app)
            latencies, failures, _ = await run(client, calls, concurrency)
            per_call = (started(app) - before) / calls
        assert not failures
        print(
            f"| {label} | {statistics.median(latencies) * 1000:.0f} "
            f"| {pct(latencies, 0.99) * 1000:.0f} | {per_call:.2f} |"
        )


OUTAGE = """
targets:
  a: {provider: mock, model: echo, mock: {fail_rate: 1}}
  b: {provider: mock, model: echo, mock: {fail_rate: 1}}
agents:
  bot:
    route: {targets: [a, b], retry: {max_attempts: 3, backoff_base_s: 0.005}}
resilience: %s
"""


async def outage(calls: int, concurrency: int) -> None:
    print()
    print(f"## Full outage: both targets fail every call; {calls} calls, {concurrency} at once")
    print("| policy | upstream attempts per call | callers failed |")
    print("|---|---:|---:|")
    for label, resilience in (
        (
            "retries without budget or breaker (3 per target, 2 targets)",
            "{breaker: {fail_max: 1000000}, budget: {ratio: 10, burst: 1000000}}",
        ),
        ("retry budget only (ratio 0.2)", "{breaker: {fail_max: 1000000}}"),
        ("budget and breakers (defaults)", "{}"),
    ):
        async with serve(OUTAGE % resilience) as (app, client):
            _, failures, _ = await run(client, calls, concurrency)
            print(f"| {label} | {started(app) / calls:.2f} | {failures / calls:.0%} |")


PARTIAL = """
targets:
  a: {provider: mock, model: echo, mock: {fail_rate: 1}}
  b: {provider: mock, model: echo}
agents:
  bot:
    route: {targets: [a, b]}
"""


async def partial(calls: int, concurrency: int) -> None:
    print()
    print(f"## One target down, its fallback healthy; {calls} calls, {concurrency} at once")
    print("| policy | success rate | upstream attempts per call | calls on the dead target |")
    print("|---|---:|---:|---:|")
    async with serve(PARTIAL) as (app, client):
        _, failures, _ = await run(client, calls, concurrency)
        dead = app.providers["a"]
        assert isinstance(dead, MockProvider)
        print(
            f"| defaults (fallback, budget 0.2, breaker opens after 5 failures) "
            f"| {(calls - failures) / calls:.1%} | {started(app) / calls:.2f} "
            f"| {dead.stats.started} |"
        )


FLAKY = """
targets:
  a: {provider: mock, model: echo, mock: {seed: 3, fail_rate: 0.3, error: overloaded}}
  b: {provider: mock, model: echo, mock: {seed: 4, fail_rate: 0.3, error: overloaded}}
agents:
  bot:
    route: %s
resilience: {breaker: {fail_max: 50}, budget: %s}
"""


async def flaky(calls: int, concurrency: int) -> None:
    print()
    print("## Flaky targets: 30% of calls get 529 overloaded")
    print("| policy | success rate | attempts per call |")
    print("|---|---:|---:|")
    retrying = "{targets: [a, b], retry: {max_attempts: 2, backoff_base_s: 0.01}}"
    for label, route, budget in (
        ("one target, no retries", "{targets: [a], retry: {max_attempts: 1}}", "{}"),
        ("retries (2 per target) + fallback, budget ratio 0.2", retrying, "{ratio: 0.2}"),
        ("retries (2 per target) + fallback, budget ratio 0.5", retrying, "{ratio: 0.5}"),
    ):
        async with serve(FLAKY % (route, budget)) as (app, client):
            _, failures, _ = await run(client, calls, concurrency)
            print(f"| {label} | {(calls - failures) / calls:.1%} | {started(app) / calls:.2f} |")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    await slow_tail(args.calls, args.concurrency)
    await outage(args.calls * 2, args.concurrency * 4)
    await partial(args.calls * 2, args.concurrency * 4)
    await flaky(args.calls, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
