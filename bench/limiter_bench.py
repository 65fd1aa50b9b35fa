"""Does the Redis rate limiter time out under an ordinary burst? (issue 12 §6)

Starts ``--replicas`` server processes on one Redis (127.0.0.1:6379, a throw-away key
prefix), each with ``on_error: open`` and a limit of ``--limit`` requests a minute per
tenant, then fires ``--calls`` Invoke calls at once, spread over the replicas, ``--rounds``
times (each round another tenant, so each starts with the whole limit). Reported per
setting: calls admitted per round (should be the limit: more means the limiter failed
open), limiter failures (each logged "rate-limit backend failed"), and call latency.
Nothing is asserted: the machine is small and shared.

    .venv/bin/python bench/limiter_bench.py [--replicas 3] [--calls 300] [--limit 60]
        [--rounds 3] [--setting TIMEOUT_S:POOL ...]

``--setting`` may be repeated: the default compares the old defaults (0.25 s, a pool as
large as the burst) with the new ones (1.0 s, 32 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated"), str(ROOT / "clients" / "python")]

from switchboard_client import AsyncClient, ResourceExhaustedError  # noqa: E402

from tests.chain_helpers import auth_config, make_keys  # noqa: E402
from tests.processes import serve_process  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"
FAILED = "rate-limit backend failed"


async def burst(addresses: list[str], keys: list[str], calls: int) -> tuple[int, list[float]]:
    """Fire ``calls`` at once over the replicas; (admitted, latencies of admitted calls)."""
    clients = [AsyncClient(a, api_key=k) for a, k in zip(addresses, keys, strict=True)]
    latencies: list[float] = []

    async def one(i: int) -> bool:
        began = time.perf_counter()
        try:
            await clients[i % len(clients)].invoke("echo", f"call {i}")
        except ResourceExhaustedError:
            return False
        latencies.append(time.perf_counter() - began)
        return True

    try:
        admitted = sum(await asyncio.gather(*(one(i) for i in range(calls))))
    finally:
        for client in clients:
            await client.close()
    return admitted, latencies


def run(setting: str, args: argparse.Namespace) -> None:
    timeout_s, pool = setting.split(":")
    prefix = f"bench:rl:{uuid.uuid4().hex}:"
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        tenants = [(f"t{r}", ("*",)) for r in range(args.rounds)]
        keys_file, keys, _ = make_keys(folder, tenants)
        limits = f"""
rate_limits:
  backend: redis
  redis: {{url: "{REDIS}", key_prefix: "{prefix}", on_error: open,
          timeout_s: {timeout_s}, pool_size: {pool}}}
  tenant: {{requests_per_min: {args.limit}}}
"""
        config = folder / "switchboard.yaml"
        config.write_text(auth_config(keys_file, limits))
        replicas = []
        for r in range(args.replicas):
            own = folder / f"r{r}.yaml"
            own.write_text(config.read_text())
            replicas.append(stack.enter_context(serve_process(own)))
        addresses = [f"127.0.0.1:{p.port}" for p in replicas]
        for r in range(args.rounds):
            admitted, latencies = asyncio.run(
                burst(addresses, [keys[r]] * len(addresses), args.calls)
            )
            failures = sum(p.output.count(FAILED) for p in replicas)
            cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
            print(
                f"timeout_s={timeout_s:>5} pool={pool:>4} round {r}: admitted {admitted:>4} "
                f"of limit {args.limit} ({admitted / args.limit:.2f}x); limiter failures so "
                f"far {failures}; latency p50 {cuts[49] * 1000:.0f} ms "
                f"p99 {cuts[98] * 1000:.0f} ms"
            )
    client = redis.Redis.from_url(REDIS)
    stale = list(client.scan_iter(match=f"{prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setting", action="append", help="TIMEOUT_S:POOL")
    args = parser.parse_args()
    for setting in args.setting or ["0.25:1000", "1.0:32"]:
        run(setting, args)


if __name__ == "__main__":
    main()
