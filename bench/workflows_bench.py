"""What durability costs: a three-step sequential workflow against three direct Invokes of the
same agent, on the embedded (SQLite) and shared (PostgreSQL) backends, mock provider.

    .venv/bin/python bench/workflows_bench.py [--runs 30] [--backends embedded,shared]

Prints, per backend, the medians of alternated runs: three direct Invokes, one workflow
Invoke, their ratio, and the checkpoint cost per step ((workflow - 3 x invoke) / 3). The
shared backend needs PostgreSQL and Redis on 127.0.0.1 (its schema and keys are removed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated"), str(ROOT / "clients" / "python")]

from switchboard.v1 import agent_pb2 as pb  # noqa: E402
from switchboard.v1 import agent_pb2_grpc  # noqa: E402

from tests.backends import postgres_schema, redis_prefix, shared_state_yaml  # noqa: E402
from tests.harness import serve_config  # noqa: E402
from tests.workflow_rig import drop_schemas  # noqa: E402

CONFIG = """
targets:
  echo: {provider: mock, model: echo}
agents:
  a: {system_prompt: a, route: [echo]}
workflows:
  three:
    kind: sequential
    steps: [{id: s1, agent: a}, {id: s2, agent: a}, {id: s3, agent: a}]
"""


@contextlib.asynccontextmanager
async def state(backend: str) -> AsyncIterator[str]:
    if backend == "embedded":
        yield ""
        return
    async with postgres_schema() as schema, redis_prefix() as prefix:
        try:
            yield shared_state_yaml(schema, prefix)
        finally:
            await drop_schemas(schema)


async def measure(backend: str, runs: int) -> dict[str, float]:
    message = pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello there")])
    async with state(backend) as extra, serve_config(CONFIG + extra) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        direct: list[float] = []
        workflow: list[float] = []
        for i in range(runs + 3):  # the first three warm up
            for kind in ("direct", "workflow") if i % 2 else ("workflow", "direct"):
                began = time.perf_counter()
                if kind == "direct":
                    for _ in range(3):
                        await stub.Invoke(pb.InvokeRequest(agent="a", messages=[message]))
                else:
                    await stub.Invoke(pb.InvokeRequest(agent="three", messages=[message]))
                if i >= 3:
                    (direct if kind == "direct" else workflow).append(time.perf_counter() - began)
    d, w = statistics.median(direct), statistics.median(workflow)
    return {"direct_3_ms": d * 1000, "workflow_ms": w * 1000, "ratio": w / d,
            "per_step_ms": (w - d) / 3 * 1000}  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backends", default="embedded,shared")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        result = await measure(backend, args.runs)
        print(
            f"{backend:9} 3 direct Invokes {result['direct_3_ms']:7.1f} ms | workflow "
            f"{result['workflow_ms']:7.1f} ms | x{result['ratio']:.2f} | checkpoint cost "
            f"{result['per_step_ms']:6.1f} ms per step"
        )


if __name__ == "__main__":
    asyncio.run(main())
