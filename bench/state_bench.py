"""What state costs per call: sequential unary calls through an in-process server, with no
state, with embedded state (SQLite + memory) and shared state (PostgreSQL + Redis), plain and
with a session. Every stateful call also reserves and settles a budget and writes its ledger
line and audit entry. Reported: calls/s and p50/p99, and the ratio to the stateless run.
Nothing is asserted: this machine is small and shared, so read the ratios.

It also measures what the shielded write costs a call: the recorder runs each call's closing
write (ledger line, budget settlement) in a task of its own that the call awaits shielded, so
a cancelled caller cannot cut it short. ``--shield-runs`` alternated runs of ``--shield-calls``
records through the recorder with a write that does nothing, against the same write awaited
inline; the medians' difference is the task and the shield alone, per call.

    .venv/bin/python bench/state_bench.py [--calls 1000] [--shield-runs 7 --shield-calls 20000]

The shared runs need PostgreSQL (database `test`, user postgres, trust) and Redis on
127.0.0.1; they use a throw-away schema and key prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated"), str(ROOT / "clients" / "python")]

from service.agents.pipeline import Stateless  # noqa: E402
from service.state.memory import MemoryFast  # noqa: E402
from service.state.outbox import Outbox  # noqa: E402
from service.state.records import AuditEntry, UsageRecord  # noqa: E402
from service.state.sqlite import SqliteDurable  # noqa: E402
from service.usage.budgets import Budgets  # noqa: E402
from service.usage.ledger import Ledger  # noqa: E402
from service.usage.recorder import Recorder  # noqa: E402
from tests.harness import serve_config  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
CONFIG = """
targets:
  mock-echo: {provider: mock, model: echo}
pricing:
  echo: {input_per_mtok: 1, output_per_mtok: 2}
agents:
  echo: {route: [mock-echo], overridable_parameters: [max_tokens]}
budgets:
  - {name: bench, period: day, limit_usd: 1000000}
"""
TEXT = "w1 w2 w3 w4 w5 w6 w7 w8"


@contextlib.asynccontextmanager
async def shared() -> AsyncIterator[str]:
    schema, prefix = f"sb_bench_{uuid.uuid4().hex[:8]}", f"sbbench{uuid.uuid4().hex[:8]}"
    try:
        yield (
            f"state: {{backend: shared, postgres_dsn: '{PG}', postgres_schema: {schema}, "
            f"redis_url: '{REDIS}', redis_prefix: {prefix}}}\n"
        )
    finally:
        conn = await asyncpg.connect(PG)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
        client = aioredis.Redis.from_url(REDIS)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def measure(config: str, calls: int, *, session: bool, stateless: bool = False) -> tuple:
    async with serve_config(textwrap.dedent(CONFIG) + config) as served:
        if stateless:
            served.app.runner._pipeline = Stateless()  # the bench's baseline only
        client = served.client
        for _ in range(50):
            await client.invoke("echo", TEXT)
        latencies = []
        started = time.perf_counter()
        for i in range(calls):
            begin = time.perf_counter()
            await client.invoke("echo", TEXT, session_id=f"s{i % 50}" if session else "")
            latencies.append(time.perf_counter() - begin)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return calls / elapsed, latencies[len(latencies) // 2] * 1e3, latencies[calls * 99 // 100] * 1e3


async def shield_cost(runs: int, calls: int) -> tuple[float, float]:
    """Medians over ``runs`` alternated runs of µs per call: (shielded task, inline)."""
    with tempfile.TemporaryDirectory() as tmp:
        return await _shield_cost(Path(tmp), runs, calls)


async def _shield_cost(tmp: Path, runs: int, calls: int) -> tuple[float, float]:
    durable = SqliteDurable(tmp, timeout_s=5)
    ledger = Ledger(durable, Outbox(tmp, timeout_s=5))
    recorder = Recorder(ledger, Budgets(MemoryFast(), hold_s=60))
    usage = UsageRecord(0.0, "t", "", "r", "a", "x", "m", 1, 1, 1, "ok", 1, False)
    audit = AuditEntry(0.0, "t", "", "r", "call", "agent:a", "ok")

    async def write() -> None:
        return None

    async def shielded() -> None:
        await recorder.record(usage, audit, None, write=write)

    async def inline() -> None:
        await write()

    samples: dict[str, list[float]] = {"shielded": [], "inline": []}
    for _ in range(runs):
        for name, one in (("shielded", shielded), ("inline", inline)):
            began = time.perf_counter()
            for _ in range(calls):
                await one()
            samples[name].append((time.perf_counter() - began) / calls * 1e6)
    await ledger.aclose()
    await durable.aclose()
    return statistics.median(samples["shielded"]), statistics.median(samples["inline"])


async def main(calls: int, shield_runs: int, shield_calls: int) -> None:
    shielded, inline = await shield_cost(shield_runs, shield_calls)
    print(f"shielded write task: {shielded:.2f} µs a call, inline {inline:.2f} µs: "
          f"{shielded - inline:.2f} µs for the task and the shield")  # fmt: skip
    if not calls:
        return
    rows = [("no state", await measure("", calls, session=False, stateless=True))]
    rows.append(("embedded", await measure("", calls, session=False)))
    rows.append(("embedded + session", await measure("", calls, session=True)))
    async with shared() as config:
        rows.append(("shared", await measure(config, calls, session=False)))
    async with shared() as config:
        rows.append(("shared + session", await measure(config, calls, session=True)))
    base = rows[0][1][0]
    for name, (rps, p50, p99) in rows:
        print(f"{name:20} {rps:7.0f} calls/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
              f"x{rps / base:4.2f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="0: the shield only")
    parser.add_argument("--shield-runs", type=int, default=7)
    parser.add_argument("--shield-calls", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.shield_runs, args.shield_calls))
