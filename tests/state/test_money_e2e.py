"""Money under faults (issue 12): every billed token charged once, no budget overspent, no
answered call without its ledger line. Priced like the issue measured: the mock at 0.001 USD
an input token and 0.002 an output token (``echo`` in tests/state/stateful.py)."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc
from switchboard_client import AsyncClient, ResourceExhaustedError, UnavailableError

from service.secrets import Secret
from service.state.postgres import PostgresDurable
from service.state.sqlite import SqliteDurable
from service.state.stores import Durable
from service.usage.budgets import applicable
from tests.backends import POSTGRES_DSN, postgres_schema, redis_prefix
from tests.harness import Served, serve_config
from tests.own_servers import own_redis, postgres_proxy
from tests.state.stateful import BASE
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio

IN_NANOS, OUT_NANOS = 1_000_000, 2_000_000  # echo: per input token, per output token
MONEY = """
targets:
  mock-stream:
    provider: mock
    model: echo
    mock: {tokens_per_s: 40}
  mock-drop:
    provider: mock
    model: echo
    mock: {drop_after_tokens: 12}
agents:
  streamer:
    route: [mock-stream]
    overridable_parameters: [max_tokens]
  dropper:
    route: [mock-drop]
"""
FIFTEEN = " ".join(f"w{i:02d}" for i in range(15))  # 15 words: the mock's 15 tokens


def _config(extra: str = "") -> str:
    """BASE with MONEY's targets and agents merged in, plus ``extra``."""
    raw = yaml.safe_load(textwrap.dedent(BASE))
    money = yaml.safe_load(MONEY)
    raw["targets"].update(money["targets"])
    raw["agents"].update(money["agents"])
    return yaml.safe_dump(raw) + textwrap.dedent(extra)


def _shared(schema: str, redis_url: str, prefix: str = "money", dsn: str = POSTGRES_DSN) -> str:
    return (
        "state:\n  backend: shared\n"
        f"  postgres_dsn: {dsn}\n  postgres_schema: {schema}\n"
        f"  redis_url: {redis_url}\n  redis_prefix: {prefix}\n  timeout_s: 1\n"
    )


@contextlib.asynccontextmanager
async def _serve(backend: str, extra: str = "", **kw: object) -> AsyncIterator[Served]:
    config = _config(extra)
    if backend == "embedded":
        async with serve_config(config, **kw) as served:  # type: ignore[arg-type]
            yield served
        return
    async with (
        postgres_schema() as schema,
        redis_prefix() as prefix,
        serve_config(
            config + _shared(schema, "redis://127.0.0.1:6379/0", prefix),
            **kw,  # type: ignore[arg-type]
        ) as served,
    ):
        yield served


@pytest.fixture(params=["embedded", "shared"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _totals(durable: Durable) -> tuple[int, int, int, int]:
    """(calls, input tokens, output tokens, cost) of the default tenant, all time."""
    totals = await durable.totals("default", 0, time.time() + 1, ())
    if not totals:
        return (0, 0, 0, 0)
    t = totals[0]
    return (t.calls, t.input_tokens, t.output_tokens, t.cost_nanos)


async def _wait_calls(durable: Durable, calls: int) -> tuple[int, int, int, int]:
    got = await _totals(durable)
    give_up = time.monotonic() + 15
    while got[0] < calls:
        assert time.monotonic() < give_up, f"ledger has {got[0]} of {calls} lines"
        await asyncio.sleep(0.02)
        got = await _totals(durable)
    return got


# 2. a stream that ends without its finish is charged


async def _budget_spent(served: Served) -> int:
    (bound,) = applicable(served.app.snapshot.budgets, "default", "", time.time())
    spent, held = await served.app.stores.fast.spent(bound.line)
    assert held == 0, "the reservation was settled, not left to expire"
    return spent


BUDGET = "budgets:\n  - {name: daily, period: day, limit_usd: 100}\n"


async def test_a_caller_that_cancels_after_12_of_15_tokens_is_charged(backend: str) -> None:
    async with _serve(backend, BUDGET) as served:
        seen = 0
        async for event in served.client.stream("streamer", FIFTEEN):
            if event.WhichOneof("event") == "text_delta":
                seen += 1
                if seen == 12:
                    break  # the caller leaves
        durable = served.app.stores.durable
        _, input_tokens, output_tokens, cost = await _wait_calls(durable, 1)
        # The prompt went upstream; at least the 12 tokens delivered came back.
        assert input_tokens >= 15
        assert output_tokens >= 12
        assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS
        # ... and the budget counts it.
        await wait_for(lambda: served.app.pipeline.recorder.in_flight == 0)
        assert await _budget_spent(served) == cost


async def test_an_upstream_drop_after_12_tokens_is_charged(backend: str) -> None:
    async with _serve(backend, BUDGET) as served:
        with pytest.raises(UnavailableError, match="dropped"):
            async for _ in served.client.stream("dropper", FIFTEEN):
                pass
        entries = await served.app.stores.durable.recent_audit("default", 1)
        assert entries[0].outcome == "Unavailable"
        calls, input_tokens, output_tokens, cost = await _wait_calls(served.app.stores.durable, 1)
        assert (calls, input_tokens >= 15, output_tokens >= 12) == (1, True, True)
        assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS
        assert await _budget_spent(served) == cost


async def test_a_deadline_mid_stream_is_charged(backend: str) -> None:
    async with _serve(backend, BUDGET) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        request = pb.StreamRequest(
            agent="streamer",
            messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=FIFTEEN)])],
        )
        delivered = 0

        async def read() -> None:
            nonlocal delivered
            async for event in stub.Stream(request, timeout=0.2):  # 15 tokens take ~0.35 s
                delivered += event.WhichOneof("event") == "text_delta"

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read()
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        _, input_tokens, output_tokens, cost = await _wait_calls(served.app.stores.durable, 1)
        assert input_tokens >= 15
        assert output_tokens >= delivered
        assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS > 0


async def test_a_drain_past_grace_records_every_cut_call(backend: str, tmp_path: Path) -> None:
    """20 streams cut by a drain: every one is in the ledger, charged, after stop()."""
    async with postgres_schema() as schema:
        extra = "" if backend == "embedded" else _shared(schema, "redis://127.0.0.1:6379/0")
        environ = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path)}
        channel: grpc.aio.Channel | None = None
        streams: list[asyncio.Task[None]] = []
        try:
            async with serve_config(_config(extra), environ, grace_s=0.1) as served:
                channel = grpc.aio.insecure_channel(served.address)
                client = AsyncClient(served.address, channel=channel)
                begun: set[int] = set()
                all_begun = asyncio.Event()

                async def one(i: int) -> None:
                    with contextlib.suppress(Exception):
                        async for event in client.stream("trickle", f"{FIFTEEN} {i}"):
                            if event.WhichOneof("event") == "text_delta":
                                begun.add(i)
                                if len(begun) == 20:
                                    all_begun.set()

                streams = [asyncio.create_task(one(i)) for i in range(20)]
                await asyncio.wait_for(all_begun.wait(), 30)
            # stop() returned: its stores are closed. Read what the store holds.
            durable: Durable
            if backend == "embedded":
                durable = SqliteDurable(tmp_path, timeout_s=5)
            else:
                durable = PostgresDurable(Secret(POSTGRES_DSN), schema=schema, timeout_s=5)
            try:
                calls, input_tokens, output_tokens, cost = await _totals(durable)
            finally:
                await durable.aclose()
            assert calls == 20
            assert output_tokens >= 20
            assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS
        finally:
            if channel is not None:
                await channel.close()
            if streams:
                await asyncio.wait(streams, timeout=10)


# 3. the reservation is an upper bound

DENSE = " ".join("x" for _ in range(400))  # 400 one-letter words: 400 tokens in 799 bytes


async def test_a_burst_of_token_dense_prompts_cannot_overspend(backend: str) -> None:
    limit_usd = 2.0  # each call costs 0.402 USD (400 tokens in, 1 out)
    extra = f"budgets:\n  - {{name: daily, period: day, limit_usd: {limit_usd}}}\n"
    async with _serve(backend, extra) as served:
        params = pb.Parameters(max_tokens=1)

        async def call() -> int:
            try:
                answer = await served.client.invoke("echo", DENSE, parameters=params)
            except ResourceExhaustedError:
                return 0
            return round(answer.usage.cost_usd * 1e9)

        costs = await asyncio.gather(*(call() for _ in range(30)))
        assert any(costs)
        assert costs.count(402_000_000) == sum(1 for c in costs if c)
        _, _, _, ledger = await _totals(served.app.stores.durable)
        assert ledger == sum(costs) <= limit_usd * 1e9


async def test_a_burst_of_token_dense_prompts_cannot_exceed_tokens_per_minute() -> None:
    extra = "rate_limits:\n  tenant: {tokens_per_min: 1000}\n"
    async with _serve("embedded", extra) as served:
        params = pb.Parameters(max_tokens=1)

        async def call() -> int:
            try:
                answer = await served.client.invoke("echo", DENSE, parameters=params)
            except ResourceExhaustedError:
                return 0
            return answer.usage.input_tokens + answer.usage.output_tokens

        used = await asyncio.gather(*(call() for _ in range(20)))
        assert any(used)
        assert sum(used) <= 1000


async def test_a_cut_short_call_counts_against_tokens_per_minute() -> None:
    # Each call reserves its bound, 8 + (59 + 8) bytes in and 15 out: 90 tokens. The first is
    # cancelled after 12 tokens and charged (>= 15 in, 12 out), so 120 has no room for a
    # second one (a refund of the whole estimate, as before, left room).
    extra = "rate_limits:\n  tenant: {tokens_per_min: 120}\n"
    async with _serve("embedded", extra) as served:
        params = pb.Parameters(max_tokens=15)
        seen = 0
        async for event in served.client.stream("streamer", FIFTEEN, parameters=params):
            seen += event.WhichOneof("event") == "text_delta"
            if seen == 12:
                break
        await _wait_calls(served.app.stores.durable, 1)
        await wait_for(lambda: served.app.admission.in_flight == 0)
        with pytest.raises(ResourceExhaustedError, match="tokens per minute"):
            await served.client.invoke("streamer", FIFTEEN, parameters=params)


async def test_a_burst_on_a_long_session_cannot_exceed_tokens_per_minute() -> None:
    """The history a session call sends is reserved too, before the call goes upstream: a
    burst of one-word messages on a session of 400 tokens stays within the limit."""
    extra = "rate_limits:\n  tenant: {tokens_per_min: 2000}\n"
    async with _serve("embedded", extra) as served:
        words = " ".join("x" for _ in range(200))
        first = await served.client.invoke(
            "echo", words, session_id="long", parameters=pb.Parameters(max_tokens=200)
        )
        used = [first.usage.input_tokens + first.usage.output_tokens]  # 200 in, 200 out

        async def call() -> int:
            try:
                answer = await served.client.invoke(
                    "echo", "y", session_id="long", parameters=pb.Parameters(max_tokens=1)
                )
            except ResourceExhaustedError:
                return 0
            return answer.usage.input_tokens + answer.usage.output_tokens

        used += await asyncio.gather(*(call() for _ in range(10)))
        assert sum(1 for u in used if u) >= 2
        assert sum(used) <= 2000


# 1. a Redis loss forgets no spend and runs no answered request again


async def _past_unavailable(served: Served, text: str, params: pb.Parameters) -> None:
    """Invoke, again while it is UNAVAILABLE (bounded)."""
    give_up = time.monotonic() + 10
    while True:
        try:
            await served.client.invoke("echo", text, parameters=params)
        except UnavailableError:
            assert time.monotonic() < give_up, "still unavailable"
            await asyncio.sleep(0.05)
        else:
            return


@pytest.mark.parametrize("loss", ["restart", "flush"])
async def test_a_redis_loss_forgets_no_spend(loss: str, tmp_path: Path) -> None:
    limit_usd = 0.05
    params = pb.Parameters(max_tokens=5)
    with own_redis(tmp_path) as redis:
        async with postgres_schema() as schema:
            extra = _shared(schema, redis.url) + (
                f"budgets:\n  - {{name: daily, period: day, limit_usd: {limit_usd}}}\n"
            )
            async with serve_config(_config(extra)) as served:
                spent = 0.0
                for _ in range(50):
                    try:
                        answer = await served.client.invoke("echo", "a b", parameters=params)
                    except ResourceExhaustedError:
                        break
                    spent += answer.usage.cost_usd
                assert spent > 0
                if loss == "restart":
                    redis.restart()
                else:
                    redis.flush()
                # The counters are rebuilt from the ledger: still no room (a pooled connection
                # that died with the old server may fail one call first: UNAVAILABLE).
                with pytest.raises(ResourceExhaustedError, match="budget 'daily'"):
                    await _past_unavailable(served, "a b", params)
                _, _, _, cost = await _totals(served.app.stores.durable)
                assert cost <= limit_usd * 1e9


async def test_a_redis_loss_keeps_reservations_in_flight(tmp_path: Path) -> None:
    """A call in flight when Redis restarts keeps its hold: a burst right after the loss
    cannot spend the room it will need."""
    with own_redis(tmp_path) as redis:
        async with postgres_schema() as schema:
            # Each "streamer" call of FIFTEEN with max_tokens 15 reserves its bound,
            # (8 + 8 + 59) * 0.001 + 15 * 0.002 = 0.105 USD, and costs 0.045.
            extra = _shared(schema, redis.url) + (
                "budgets:\n  - {name: daily, period: day, limit_usd: 0.2}\n"
            )
            async with serve_config(_config(extra)) as served:
                params = pb.Parameters(max_tokens=15)
                first = served.client.stream("streamer", FIFTEEN, parameters=params)
                events = aiter(first)
                await anext(events)  # in flight, its 0.105 held
                redis.restart()
                with contextlib.suppress(UnavailableError):  # a pooled connection died
                    await served.client.invoke("echo", "x", parameters=pb.Parameters(max_tokens=1))
                # 0.2 - 0.105 leaves no room for another 0.105.
                with pytest.raises(ResourceExhaustedError):
                    await served.client.invoke("streamer", FIFTEEN, parameters=params)
                async for _ in events:
                    pass
                _, _, _, cost = await _totals(served.app.stores.durable)
                assert cost <= 0.2e9


async def test_a_retried_request_id_after_a_redis_restart_is_not_run_again(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as redis:
        async with (
            postgres_schema() as schema,
            serve_config(_config(_shared(schema, redis.url))) as served,
        ):
            first = await served.client.invoke("echo", "pay once", request_id="idem-r")
            redis.restart()
            with contextlib.suppress(UnavailableError):  # a pooled connection died with it
                await served.client.invoke("chat", "warm up")
            retry = await served.client.invoke("echo", "pay once", request_id="idem-r")
            assert retry == first
            assert served.app.providers["mock-echo"].stats.started == 1  # type: ignore[attr-defined]
            totals = await served.app.stores.durable.totals("default", 0, time.time(), ["agent"])
            assert [(t.agent, t.calls) for t in totals] == [("chat", 1), ("echo", 1)]


async def test_a_retried_request_id_after_a_restart_is_not_run_again(tmp_path: Path) -> None:
    environ = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path)}
    async with serve_config(_config(), environ) as served:
        first = await served.client.invoke("echo", "pay once", request_id="idem-e")
    async with serve_config(_config(), environ) as served:
        retry = await served.client.invoke("echo", "pay once", request_id="idem-e")
        assert retry == first
        assert served.app.providers["mock-echo"].stats.started == 0  # type: ignore[attr-defined]
        calls, *_ = await _totals(served.app.stores.durable)
        assert calls == 1


# 4. no answered call is missing from the ledger and audit log


async def test_postgres_refusing_connections_loses_no_ledger_line(tmp_path: Path) -> None:
    environ = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path)}
    async with postgres_schema() as schema, redis_prefix() as prefix, postgres_proxy() as proxy:
        config = _config(_shared(schema, "redis://127.0.0.1:6379/0", prefix, proxy.dsn))
        async with serve_config(config, environ) as served:
            answered = [(await served.client.invoke("echo", "before")).request_id]
            await proxy.block()
            # No request_id: an idempotency claim needs PostgreSQL (UNAVAILABLE without it).
            for i in range(10):
                answered.append((await served.client.invoke("echo", f"during {i}")).request_id)  # noqa: PERF401 (one after another)
            assert (await served.app.ledger.outbox.count()) == 10
            await proxy.unblock()
            give_up = time.monotonic() + 20
            while await served.app.ledger.outbox.count():
                assert time.monotonic() < give_up, "the outbox was never replayed"
                await asyncio.sleep(0.05)
            durable = served.app.stores.durable
            calls, _, _, cost = await _totals(durable)
            assert calls == 11
            assert cost == sum(2 * IN_NANOS + 2 * OUT_NANOS for _ in range(10)) + (
                IN_NANOS + OUT_NANOS
            )
            audited = await durable.recent_audit("default", 50)
            assert sorted(e.request_id for e in audited) == sorted(answered)


async def test_the_outbox_is_replayed_by_the_next_run(tmp_path: Path) -> None:
    environ = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path)}
    async with postgres_schema() as schema, redis_prefix() as prefix, postgres_proxy() as proxy:
        config = _config(_shared(schema, "redis://127.0.0.1:6379/0", prefix, proxy.dsn))
        answered = []
        async with serve_config(config, environ) as served:
            await proxy.block()
            for i in range(5):
                answered.append((await served.client.invoke("echo", f"during {i}")).request_id)  # noqa: PERF401 (one after another)
        # Stopped with the lines in the outbox; the store is back for the next run.
        await proxy.unblock()
        async with serve_config(config, environ) as served:
            durable = served.app.stores.durable
            calls, *_ = await _wait_calls(durable, 5)
            assert calls == 5
            audited = await durable.recent_audit("default", 50)
            assert sorted(e.request_id for e in audited) == sorted(answered)
