"""Every Redis client that makes decisions recovers at once when Redis restarts (issue 11 §4).

Each test runs its own redis-server on a free port (tests/own_redis.py), kills it with
SIGKILL (a crash: every pooled connection goes stale, every key is lost) and starts it again
on the same port. Within a second of Redis answering again, every decision must be exact:
the rate limiter (on_error closed refuses nothing; on_error open lets no more than the
limit through) with health SERVING, the response-cache leases and idempotency claims, and
the shared breaker state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import redis
from grpc_health.v1 import health_pb2
from switchboard_client import ResourceExhaustedError, UnavailableError

from service.errors import Unavailable
from service.ratelimit.limiter import DOWN_AFTER_FAILURES
from service.routing.breaker import OPEN, BreakerOpen, redis_storage
from service.routing.policy import BreakerPolicy, RedisStorageSpec, ResilienceSpec
from service.routing.registry import TargetRegistry
from service.state.redis import RedisFast
from tests.chaos import health, wait_for
from tests.harness import serve_config
from tests.own_redis import OwnRedis, own_redis

RATELIMIT = "switchboard.ratelimit"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RECOVERY_S = 1.0  # the figure: within a second of Redis answering again


def limited(url: str, on_error: str, per_min: int) -> str:
    return f"""
rate_limits:
  backend: redis
  redis: {{url: "{url}", key_prefix: "rl-{uuid.uuid4().hex}:", on_error: {on_error}}}
  tenant: {{requests_per_min: {per_min}}}
targets:
  mock-echo: {{provider: mock, model: echo}}
agents:
  echo: {{route: [mock-echo]}}
"""


async def serving_within(channel: object, answered_at: float) -> float:
    """Wait (bounded) for the limiter's health to be SERVING; the seconds it took after
    Redis answered."""
    give_up = time.monotonic() + 10.0
    while await health(channel, RATELIMIT) != SERVING:  # type: ignore[arg-type]
        assert time.monotonic() < give_up, "the limiter never reported SERVING again"
        await asyncio.sleep(0.01)
    return time.monotonic() - answered_at


@pytest.mark.parametrize(("on_error", "limit"), [("closed", 1000), ("open", 30)])
async def test_the_limiter_is_exact_within_a_second_of_a_redis_restart(
    tmp_path: Path, on_error: str, limit: int
) -> None:
    with own_redis(tmp_path) as server:
        async with serve_config(limited(server.url, on_error, limit)) as served:
            client = served.client
            # Several calls at once: the pool holds several connections, each to go stale.
            await asyncio.gather(*(client.invoke("echo", "warm") for _ in range(10)))
            server.kill()
            for _ in range(DOWN_AFTER_FAILURES):
                if on_error == "closed":
                    with pytest.raises(UnavailableError, match="rate limiter unavailable"):
                        await client.invoke("echo", "while down")
                else:
                    await client.invoke("echo", "while down")  # let through, uncounted
            assert await health(served.channel, RATELIMIT) == NOT_SERVING

            answered_at = server.start()  # non-persistent: every counter starts afresh
            took = await serving_within(served.channel, answered_at)
            assert took <= RECOVERY_S, f"health SERVING {took:.2f}s after Redis answered"

            results = await asyncio.gather(
                *(client.invoke("echo", f"after {i}") for i in range(50)),
                return_exceptions=True,
            )
            served_n = sum(not isinstance(r, BaseException) for r in results)
            refused = [r for r in results if isinstance(r, BaseException)]
            if on_error == "closed":
                assert refused == []  # 50 of 50 served: the limit is far away
            else:
                assert served_n == limit
                assert all(isinstance(r, ResourceExhaustedError) for r in refused)
            assert await health(served.channel, RATELIMIT) == SERVING


async def test_cache_leases_and_idempotency_claims_work_at_once_after_a_restart(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as server:
        fast = RedisFast(server.url, prefix=f"t-{uuid.uuid4().hex}", timeout_s=2.0, pool_size=10)
        try:
            await asyncio.gather(*(fast.get(f"warm-{i}") for i in range(10)))
            server.kill()
            with pytest.raises(Unavailable):
                await fast.get("while down")
            server.start()
            # One leader among ten concurrent callers, and nobody told the store failed.
            leads = await asyncio.gather(*(fast.lead("k", f"token-{i}", 5.0) for i in range(10)))
            assert sorted(leads) == [False] * 9 + [True]
            claims = await asyncio.gather(*(fast.claim(f"rid-{i}", "fp", 5.0) for i in range(10)))
            assert [c.state for c in claims] == ["new"] * 10
        finally:
            await fast.aclose()


def breakers(url: str, namespace: str) -> tuple[TargetRegistry, object]:
    spec = ResilienceSpec(default_breaker=BreakerPolicy(fail_max=2, reset_timeout_s=60))
    storage, close = redis_storage(RedisStorageSpec(url, namespace))
    return TargetRegistry(spec, storage=storage), close


def test_an_open_circuit_stays_open_and_shared_across_a_redis_restart(tmp_path: Path) -> None:
    with own_redis(tmp_path) as server:
        one, close_one = breakers(server.url, "ns")
        two, close_two = breakers(server.url, "ns")
        try:
            for _ in range(2):
                one.get("a").breaker.admit().failed(Unavailable("down"))
            with pytest.raises(BreakerOpen):
                two.get("a").breaker.admit()
            server.kill()
            server.start()  # every key lost
            # The replicas remember: the circuit is open, and written back for the others.
            with pytest.raises(BreakerOpen):
                two.get("a").breaker.admit()
            three, close_three = breakers(server.url, "ns")
            try:
                assert three.get("a").breaker.state == OPEN
            finally:
                close_three()  # type: ignore[operator]
        finally:
            close_one()  # type: ignore[operator]
            close_two()  # type: ignore[operator]


async def test_a_breaker_built_while_redis_is_down_shares_its_state_once_it_answers(
    tmp_path: Path,
) -> None:
    server = OwnRedis(tmp_path)  # not started yet
    one, close_one = breakers(server.url, "ns")
    try:
        breaker = one.get("a").breaker
        for _ in range(2):
            breaker.admit().failed(Unavailable("down"))
        assert breaker.state == OPEN  # counted in this process meanwhile
        server.start()
        client = redis.Redis.from_url(server.url)
        try:
            # Within a second of Redis answering, the open circuit is written back.
            answered = time.monotonic()

            def shared() -> bool:
                return breaker.state == OPEN and client.get("ns:a:pybreaker:state") == b"open"

            await wait_for(shared, "the open circuit written to Redis")
            assert time.monotonic() - answered <= RECOVERY_S
            two, close_two = breakers(server.url, "ns")
            try:
                with pytest.raises(BreakerOpen):
                    two.get("a").breaker.admit()
            finally:
                close_two()  # type: ignore[operator]
        finally:
            client.close()
    finally:
        close_one()  # type: ignore[operator]
        server.kill()
