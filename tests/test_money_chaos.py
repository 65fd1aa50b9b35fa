"""Chaos for money (issue 12): three replicas under load while Redis is killed and restarted,
PostgreSQL refuses connections, callers cancel at random points and one replica is
SIGTERMed; then the books must balance to the nano-dollar.

Everything broken here is the test's own: a redis-server on a free port, a TCP proxy in front
of the shared PostgreSQL (closed to block it), a fake OpenAI upstream in this process. The
shared Redis (6379) and PostgreSQL (5432) are never stopped or blocked. The load runs for
``LOAD_S``; the whole test is bounded (replicas' start-up on a loaded machine aside).

The fake bills as an upstream would: a request that began answering costs its prompt and the
text it sent (a whole answer: the usage it reported). Its tokenizer counts as Switchboard
estimates (three UTF-8 bytes a token, four tokens a message; each piece of text is three
bytes), so a call cut short, charged an estimate of the prompt sent and the text delivered,
costs exactly what the fake billed. A caller that cancels does so at a random point: before
the answer began (the fake then sends nothing until the caller has gone) or after a random
number of pieces (the fake sends that many, then waits until the caller has gone), so what
the fake sent is exactly what Switchboard delivered, whatever the timing. Reconciled from
PostgreSQL after every replica stopped:

- the ledger's sum equals the sum the fake billed, and each call the caller can name is
  charged exactly its own bill;
- every answered request id has exactly one ledger line (status ok) and one audit entry, and
  no request id has two lines;
- the budget is never exceeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
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
from tests.fakes.httpserver import Received
from tests.fakes.openai_fake import OpenAIFake, Reply, Scenario
from tests.harness import for_tests
from tests.own_servers import own_redis, postgres_proxy
from tests.provider_rigs import OPENAI_KEY
from tests.state.test_replicas import Replica

pytestmark = [pytest.mark.asyncio, pytest.mark.system]

WORDS = 10
PIECES = tuple(f"w{i:02d}" for i in range(WORDS))  # three bytes, one token, each
PRICE_IN, PRICE_OUT = 1_000_000, 2_000_000  # nano-dollars per token (1000 / 2000 per Mtok)
LIMIT_USD = 6.0  # ~200 whole answers: the budget binds part-way through the run
CLIENTS = 6
LOAD_S = 22.0
STALL_S = 30.0  # a cut answer waits this long at most for its caller to leave
_PROMPT = re.compile(r"chaos (\S+) (whole|cut (\d+))")


def _tokens(text: str) -> int:
    """The fake's tokenizer: three UTF-8 bytes a token (Switchboard's estimate)."""
    return math.ceil(len(text.encode()) / 3)


def _prompt_tokens(request: Received) -> int:
    return sum(4 + _tokens(m["content"]) for m in request.body["messages"])


def _scenario(request: Received) -> Scenario:
    """Whole answers in ten pieces; a cut answer stops after its pieces until the caller
    leaves (the prompt says which)."""
    match = _PROMPT.search(request.body["messages"][-1]["content"])
    assert match is not None
    cut = None if match.group(3) is None else int(match.group(3))
    return Scenario(
        chunks=PIECES,
        usage=(_prompt_tokens(request), WORDS),
        chunk_delay_s=0.02,
        stall_after=None if cut is None else cut + 1,  # the role chunk, then the pieces
        stall_s=STALL_S,
    )


def _billed(reply: Reply) -> tuple[int, int]:
    """What the fake bills a request: (input, output) tokens."""
    if reply.whole:
        return reply.scenario.usage
    sent = 0 if reply.frames is None else reply.frames.written
    pieces = max(0, min(sent, WORDS + 1) - 1)  # after the role chunk
    return (_prompt_tokens(reply.request), pieces) if pieces else (0, 0)


@dataclass
class Book:
    """What the callers saw."""

    answered: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    ids: dict[str, str] = field(default_factory=dict)  # the prompt's call id → request id


def _config(fake_url: str, redis_url: str, dsn: str, schema: str, data_dir: Path) -> str:
    return for_tests(
        textwrap.dedent(f"""
        server: {{grace_s: 10}}
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
          budget_rebuild_s: 1
          data_dir: {data_dir}
        """)
    )


async def _stream(
    stub: agent_pb2_grpc.AgentServiceStub,
    request: pb.StreamRequest,
    cut: int | None,
    rng: random.Random,
    book: Book,
    call_id: str,
) -> None:
    call = stub.Stream(request, timeout=5)
    if cut == 0:  # a random point before the answer begins (the fake sends nothing)
        await asyncio.sleep(rng.uniform(0, 0.3))
        call.cancel()
        book.outcomes["cancelled"] += 1
        return
    text = 0
    async for event in call:
        kind = event.WhichOneof("event")
        if kind == "start":
            book.ids[call_id] = event.start.request_id
        elif kind == "text_delta":
            text += len(event.text_delta.text.encode())
            if cut is not None and text >= 3 * cut:  # every piece the fake will send
                call.cancel()
                book.outcomes["cancelled"] += 1
                return
        elif kind == "finish":
            book.answered.append(book.ids[call_id])
            book.outcomes["answered"] += 1
            return


async def _call(replica: Replica, n: int, rng: random.Random, book: Book) -> None:
    """One call: a whole Stream, a Stream cut at a random point, or a whole Invoke; half of
    them name their request id (a claim in PostgreSQL), half let Switchboard name it."""
    kind = rng.choices(["stream", "cut", "invoke"], weights=[55, 30, 15])[0]
    cut = rng.randint(0, WORDS - 1) if kind == "cut" else None
    call_id = f"p{n}"
    prompt = f"chaos {call_id} " + ("whole" if cut is None else f"cut {cut}")
    request_id = f"c-{n}" if rng.random() < 0.5 else ""
    if request_id:
        book.ids[call_id] = request_id
    messages = [pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=prompt)])]
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        try:
            if kind == "invoke":
                answer = await stub.Invoke(
                    pb.InvokeRequest(agent="chaos", request_id=request_id, messages=messages),
                    timeout=5,
                )
                book.ids[call_id] = answer.request_id
                book.answered.append(answer.request_id)
                book.outcomes["answered"] += 1
            else:
                request = pb.StreamRequest(agent="chaos", request_id=request_id, messages=messages)
                await _stream(stub, request, cut, rng, book, call_id)
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
    fake = OpenAIFake(choose=_scenario)
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
                redis.kill()  # every counter, hold and cached answer is gone
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
    assert book.outcomes["cancelled"] >= 10, book.outcomes
    by_id = {r["request_id"]: r for r in lines}
    per_id = Counter(r["request_id"] for r in lines)
    # Every answered request id exactly once, in the ledger and in the audit log.
    for request_id in book.answered:
        assert per_id[request_id] == 1, request_id
        assert by_id[request_id]["status"] == "ok", request_id
        assert audited[request_id] == 1, request_id
    assert max(per_id.values()) == 1  # no call recorded twice
    # The ledger charges exactly what the fake billed: in all, and call by call.
    bills = {}
    for reply in fake.replies:
        match = _PROMPT.search(reply.request.body["messages"][-1]["content"])
        assert match is not None
        bills[match.group(1)] = _billed(reply)
    assert len(bills) == len(fake.replies)  # no request reached the upstream twice
    owed = sum(i * PRICE_IN + o * PRICE_OUT for i, o in bills.values())
    charged = sum(r["cost_nanos"] for r in lines)
    assert charged == owed, (charged, owed, book.outcomes)
    named = 0
    for call_id, bill in bills.items():
        request_id = book.ids.get(call_id)
        if request_id is not None and request_id in by_id:
            line = by_id[request_id]
            assert (line["input_tokens"], line["output_tokens"]) == bill, (call_id, line)
            named += 1
    assert named >= len(bills) // 2
    assert sum(1 for r in lines if r["cost_nanos"]) == sum(1 for b in bills.values() if any(b))
    # No budget exceeded.
    assert charged <= LIMIT_USD * 1e9
    print(  # the figures, with -s
        f"chaos: {len(lines)} ledger lines, {len(bills)} upstream requests, "
        f"${charged / 1e9:.6f} charged = billed, limit ${LIMIT_USD}, {dict(book.outcomes)}"
    )
