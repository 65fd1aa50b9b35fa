"""Chaos for money (issue 12): three replicas under load while Redis is killed and restarted,
PostgreSQL refuses connections, callers cancel at random points and one replica is
SIGTERMed; then the books must balance.

Everything broken here is the test's own: a redis-server on a free port, a TCP proxy in front
of the shared PostgreSQL (closed to block it), a fake OpenAI upstream in this process. The
shared Redis (6379) and PostgreSQL (5432) are never stopped or blocked. Bounded to about a
minute. Reconciled from PostgreSQL after every replica stopped:

- every answered request id has exactly one ledger line (status ok) and one audit entry;
- the ledger's tokens for answered calls are exactly what the fake reported, and the ledger
  charges at least what the fake billed in full (a cut call is charged an estimate, which
  errs high, or the usage reported);
- every request the fake received has a ledger line;
- the budget is never exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc

from tests.backends import POSTGRES_DSN, postgres_schema
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import for_tests
from tests.own_servers import own_redis, postgres_proxy
from tests.provider_rigs import OPENAI_KEY
from tests.state.test_replicas import Replica

pytestmark = [pytest.mark.asyncio, pytest.mark.system]

WORDS = 10
USAGE = (20, WORDS)  # what the fake reports (and bills) for a whole answer
PRICE_IN, PRICE_OUT = 1_000_000, 2_000_000  # nano-dollars per token (1000 / 2000 per Mtok)
LIMIT_USD = 11.0  # ~250 whole answers: the budget binds late in the run
CLIENTS = 6
LOAD_S = 22.0
PROMPT = "please answer this chaos call with ten words, numbered"  # 55 bytes: >= 20 tokens


@dataclass
class Book:
    """What the callers saw."""

    answered: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)


def _config(fake_url: str, redis_url: str, dsn: str, schema: str, data_dir: Path) -> str:
    return for_tests(
        textwrap.dedent(f"""
        server: {{grace_s: 2}}
        targets:
          up:
            provider: openai
            model: gpt-chaos
            base_url: {fake_url}/v1
            api_key: {{env: OPENAI_API_KEY}}
        pricing:
          gpt-chaos: {{input_per_mtok: 1000, output_per_mtok: 2000}}
        agents:
          chaos:
            route: [up]
            parameters: {{max_tokens: {WORDS}}}
        budgets:
          - {{name: daily, period: day, limit_usd: {LIMIT_USD}}}
        state:
          backend: shared
          postgres_dsn: {dsn}
          postgres_schema: {schema}
          redis_url: {redis_url}
          redis_prefix: chaos
          timeout_s: 1
          health_interval_s: 0.2
          data_dir: {data_dir}
        """)
    )


async def _call(replica: Replica, n: int, rng: random.Random, book: Book) -> None:
    request_id = f"c-{n}"
    request = pb.StreamRequest(
        agent="chaos",
        request_id=request_id,
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=PROMPT)])],
    )
    cancel_after = rng.randint(0, 8) if rng.random() < 0.3 else None
    async with grpc.aio.insecure_channel(replica.address) as channel:
        call = agent_pb2_grpc.AgentServiceStub(channel).Stream(request, timeout=5)
        seen = 0
        try:
            async for event in call:
                if cancel_after is not None and seen >= cancel_after:
                    call.cancel()
                    book.outcomes["cancelled"] += 1
                    return
                seen += 1
                if event.WhichOneof("event") == "finish":
                    book.answered.append(request_id)
                    book.outcomes["answered"] += 1
                    return
        except grpc.aio.AioRpcError as exc:
            book.outcomes[exc.code().name] += 1


async def _load(replicas: list[Replica], stop: asyncio.Event, book: Book, seed: int) -> None:
    rng = random.Random(seed)
    counter = iter(range(seed * 100_000, (seed + 1) * 100_000))
    while not stop.is_set():
        alive = [r for r in replicas if r.process is not None and r.process.poll() is None]
        if not alive:
            return
        await _call(rng.choice(alive), next(counter), rng, book)


def _outbox_rows(data_dir: Path) -> int:
    path = data_dir / "outbox.sqlite3"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def test_chaos_keeps_the_books(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    book = Book()
    fake = OpenAIFake(
        Scenario(
            text=" ".join(f"w{i:02d}" for i in range(WORDS)),
            pieces=WORDS,
            usage=USAGE,
            chunk_delay_s=0.02,
        )
    )
    async with (
        fake,
        postgres_schema() as schema,
        postgres_proxy() as proxy,
    ):
        with own_redis(tmp_path) as redis:
            config = tmp_path / "switchboard.yaml"
            config.write_text(_config(fake.base_url, redis.url, proxy.dsn, schema, data_dir))
            replicas = [Replica(config, tmp_path, name) for name in ("a", "b", "c")]
            env = {"OPENAI_API_KEY": OPENAI_KEY}
            try:
                for replica in replicas:
                    replica.start(env)
                await asyncio.gather(*(r.ready() for r in replicas))
                stop = asyncio.Event()
                began = time.monotonic()
                loads = [
                    asyncio.create_task(_load(replicas, stop, book, seed))
                    for seed in range(CLIENTS)
                ]

                async def at(second: float) -> None:
                    await asyncio.sleep(max(0.0, began + second - time.monotonic()))

                await at(3)
                redis.kill()  # every counter and cached answer is gone
                await at(5)
                redis.start()
                await at(9)
                await proxy.block()  # PostgreSQL refuses connections
                await at(13)
                await proxy.unblock()
                await at(16)
                replicas[2].terminate()  # drains within grace_s, under load
                await at(LOAD_S)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*loads), 30)
                # The outbox is replayed once PostgreSQL answers (by a replica still up).
                give_up = time.monotonic() + 30
                while _outbox_rows(data_dir):
                    assert time.monotonic() < give_up, "the outbox was never replayed"
                    await asyncio.sleep(0.1)
            finally:
                for replica in replicas:
                    replica.stop()
                for replica in replicas:
                    replica.kill()

        conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
        try:
            lines = await conn.fetch(
                "SELECT request_id, status, input_tokens, output_tokens, cost_nanos "
                "FROM usage_ledger WHERE tenant = 'default'"
            )
            audited = Counter(
                r["request_id"]
                for r in await conn.fetch("SELECT request_id FROM audit_log WHERE action = 'call'")
            )
        finally:
            await conn.close()

    logs = "".join((tmp_path / f"{n}.log").read_text() for n in ("a", "b", "c"))
    assert book.outcomes["answered"] >= 20, (book.outcomes, logs[-3000:])
    per_id = Counter(r["request_id"] for r in lines)
    ok = {r["request_id"]: r for r in lines if r["status"] == "ok"}
    # Every answered request id exactly once, in the ledger and in the audit log.
    for request_id in book.answered:
        assert per_id[request_id] == 1, request_id
        assert request_id in ok, request_id
        assert audited[request_id] == 1, request_id
    assert max(per_id.values()) == 1  # no call recorded twice
    # Answered calls are charged exactly what the fake reported.
    for line in ok.values():
        assert (line["input_tokens"], line["output_tokens"]) == USAGE
        assert line["cost_nanos"] == USAGE[0] * PRICE_IN + USAGE[1] * PRICE_OUT
    # Every request the fake received is a ledger line; what it billed in full is charged.
    assert len(lines) >= len(fake.received)
    whole = USAGE[0] * PRICE_IN + USAGE[1] * PRICE_OUT
    assert sum(r["cost_nanos"] for r in lines) >= fake.completed * whole
    # No budget exceeded.
    assert sum(r["cost_nanos"] for r in lines) <= LIMIT_USD * 1e9
