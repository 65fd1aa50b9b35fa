"""A Redis loss under replicas forgets nothing any replica knows (issue 12 §1 and §4): the calls
other replicas have in flight, and the ledger lines waiting in another replica's outbox while
PostgreSQL is down, still count against the budget after the counters are rebuilt.

Replicas are separate apps (each its own stores, budgets and outbox) on one private
redis-server and the shared PostgreSQL, served in this process: a replica process would take
tens of seconds to start on a loaded machine. Priced so that a call costs about what it
reserves (output dominates, ``max_tokens`` is exact), so a reservation that is forgotten shows
as money spent past the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from switchboard_client import ResourceExhaustedError, UnavailableError

from service.providers.mock import MockProvider
from service.usage.budgets import applicable
from tests.backends import POSTGRES_DSN, postgres_schema
from tests.harness import Served, serve_config
from tests.own_servers import OwnRedis, own_redis, postgres_proxy
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio

LIMIT_USD = 0.30
# 5 words in, 5 out: 5 * 10_000 + 5 * 10_000_000 nano-dollars = 0.05005 USD a call, against
# a reservation of (8 + 8 + 9 bytes) * 10_000 + 5 * 10_000_000 = 0.05025: five fit in the
# budget, and a sixth never does, even after they settle.
PROMPT = "a b c d e"
COST = 5 * 10_000 + 5 * 10_000_000
REBUILD_S = 2.0


def _config(redis_url: str, dsn: str, schema: str, *, slow: bool) -> str:
    speed = "{tokens_per_s: 0.5}" if slow else "{}"
    return textwrap.dedent(f"""
        server: {{grace_s: 1}}
        targets:
          words:
            provider: mock
            model: echo
            mock: {speed}
        pricing:
          echo: {{input_per_mtok: 10, output_per_mtok: 10000}}
        agents:
          burst:
            route: [words]
            parameters: {{max_tokens: 5}}
        budgets:
          - {{name: daily, period: day, limit_usd: {LIMIT_USD}}}
        state:
          backend: shared
          postgres_dsn: {dsn}
          postgres_schema: {schema}
          redis_url: {redis_url}
          redis_prefix: replicas
          timeout_s: 1
          budget_rebuild_s: {REBUILD_S}
        """)


@contextlib.asynccontextmanager
async def _replicas(configs: list[str]) -> AsyncIterator[list[Served]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve_config(c)) for c in configs]


async def _call(served: Served) -> str:
    """One call, past the UNAVAILABLE of connections that died with Redis: "answered" or
    "refused" (the budget)."""
    give_up = time.monotonic() + 30
    while True:
        try:
            await served.client.invoke("burst", PROMPT)
        except ResourceExhaustedError:
            return "refused"
        except UnavailableError:
            assert time.monotonic() < give_up, "still unavailable"
            await asyncio.sleep(0.05)
        else:
            return "answered"


async def _ledger(served: Served) -> tuple[dict[str, int], int]:
    """The ledger's lines by status, and their cost. Lines of calls refused UNAVAILABLE while
    Redis was away (``_call`` tries those again; how many depends on the machine's load) cost
    nothing and are left out: the money, and the answered and refused calls, are exact."""
    lines = await served.app.stores.admin.recent_calls(1000, "default")
    assert all(line.cost_nanos == 0 for line in lines if line.status == "Unavailable")
    statuses: dict[str, int] = {}
    for line in lines:
        if line.status != "Unavailable":
            statuses[line.status] = statuses.get(line.status, 0) + 1
    return statuses, sum(line.cost_nanos for line in lines)


async def _counter(served: Served) -> tuple[int, int]:
    (bound,) = applicable(served.app.snapshot.budgets, "default", "", time.time())
    return await served.app.stores.fast.spent(bound.line)


def _restart(redis: OwnRedis) -> None:
    redis.restart()  # non-persistent: every counter, reservation and hold is gone


async def test_other_replicas_calls_in_flight_still_count_after_a_redis_restart(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as redis:
        async with postgres_schema() as schema:
            config = _config(redis.url, POSTGRES_DSN, schema, slow=True)
            async with _replicas([config] * 3) as (a, b, c):
                mocks = [r.app.providers["words"] for r in (a, b, c)]
                assert all(isinstance(m, MockProvider) for m in mocks)
                # Six calls, two a replica, each streaming for ~8 s: five fit, one is refused.
                first = [asyncio.ensure_future(_call(r)) for r in (a, b, c, a, b, c)]
                await wait_for(
                    lambda: (
                        sum(m.stats.started for m in mocks) == 5  # type: ignore[attr-defined]
                        and sum(f.done() for f in first) == 1
                    ),
                    timeout_s=30,
                )
                _restart(redis)
                # Right after the loss, a burst on one replica: the counters are rebuilt from
                # the ledger (nothing finished yet), and the five calls still streaming on
                # all three replicas are held again before anything is admitted.
                second = await asyncio.gather(*(_call(a) for _ in range(5)))
                assert second == ["refused"] * 5
                outcomes = await asyncio.gather(*first)
                assert sorted(outcomes) == ["answered"] * 5 + ["refused"]
                calls, cost = await _ledger(a)
                # Each refused call is a line at 0.
                assert (calls, cost) == ({"ok": 5, "ResourceExhausted": 6}, 5 * COST)
                assert cost <= LIMIT_USD * 1e9
                await wait_for(lambda: a.app.pipeline.recorder.in_flight == 0)
                assert await _counter(a) == (5 * COST, 0)


async def test_lines_in_another_replicas_outbox_count_after_a_redis_restart(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as redis:
        async with postgres_schema() as schema, postgres_proxy() as proxy:
            direct = _config(redis.url, POSTGRES_DSN, schema, slow=False)
            proxied = _config(redis.url, proxy.dsn, schema, slow=False)
            async with _replicas([direct, proxied]) as (a, b):
                assert await _call(a) == "answered"  # the line's counter is seeded
                await proxy.block()  # B's PostgreSQL refuses connections; A's answers
                outcomes = await asyncio.gather(*(_call(b) for _ in range(4)))
                assert outcomes == ["answered"] * 4
                assert await b.app.ledger.outbox.count() == 4  # waiting in B's outbox
                _restart(redis)
                # A rebuilds the counter from PostgreSQL, which lacks B's four lines: they
                # are held by B again before A admits anything.
                second = await asyncio.gather(*(_call(a) for _ in range(4)))
                assert second == ["refused"] * 4
                await proxy.unblock()
                give_up = time.monotonic() + 30
                while await b.app.ledger.outbox.count():
                    assert time.monotonic() < give_up, "the outbox was never replayed"
                    await asyncio.sleep(0.05)
                calls, cost = await _ledger(a)
                assert (calls, cost) == ({"ok": 5, "ResourceExhausted": 4}, 5 * COST)
                # B's holds became spend as its lines landed: the counter is the ledger.
                assert await _counter(a) == (5 * COST, 0)
