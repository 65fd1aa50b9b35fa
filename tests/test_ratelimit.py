"""Rate limits: the GCRA backends (memory and real Redis, same behavioural tests), the limiter's
per-tenant/per-key plan, reconciliation and failure modes, and refusals through the server."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard_client import AsyncClient, ResourceExhaustedError, UnavailableError

from service.config.chain_model import LimitsConfig, RateLimitsConfig, RedisLimiterConfig
from service.errors import ResourceExhausted, Unavailable
from service.ratelimit import MemoryBackend, RateLimiter
from service.ratelimit.base import NEVER, Backend, BackendError, Decision, Rate, Slot
from service.ratelimit.limiter import DOWN_AFTER_FAILURES
from service.ratelimit.redis_backend import RedisBackend
from tests.chain_helpers import auth_config, make_keys
from tests.harness import serve_config

REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A unique key prefix, and every key under it deleted afterwards."""
    prefix = f"test:rl:{uuid.uuid4().hex}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Backend]:
    b: Backend
    if request.param == "memory":
        b = MemoryBackend()
    else:
        b = RedisBackend.from_url(REDIS_URL, redis_prefix, timeout_s=2.0)
    yield b
    await b.aclose()


def rate(limit: int, cost: int = 1, key: str = "acme:t:r") -> Rate:
    return Rate(key, limit, cost, "requests_per_min", "tenant:acme")


async def test_a_rate_allows_its_limit_then_says_the_true_wait(backend: Backend) -> None:
    for _ in range(3):
        assert (await backend.acquire([rate(3)], [], "l", 1)).refused is None
    refused = await backend.acquire([rate(3)], [], "l", 1)
    assert refused.refused == 0
    # 3 per minute: one unit frees every 20 s, and the first was taken just now (the lower
    # bound leaves room for a loaded machine).
    assert 15.0 <= refused.wait_s <= 20.0


async def test_a_cost_above_the_limit_can_never_pass(backend: Backend) -> None:
    refused = await backend.acquire([rate(10, cost=11)], [], "l", 1)
    assert refused.refused == 0
    assert refused.wait_s == NEVER


async def test_acquire_is_all_or_nothing(backend: Backend) -> None:
    wide, narrow = rate(10, key="acme:t:a"), rate(1, key="acme:t:b")
    assert (await backend.acquire([wide, narrow], [], "l", 1)).refused is None
    refused = await backend.acquire([wide, narrow], [], "l", 1)
    assert refused.refused == 1
    # The refused call took nothing from the wide rate: 9 more fit, not 8.
    for _ in range(9):
        assert (await backend.acquire([wide], [], "l", 1)).refused is None
    assert (await backend.acquire([wide], [], "l", 1)).refused == 0


async def test_a_refund_gives_room_back(backend: Backend) -> None:
    assert (await backend.acquire([rate(4, cost=4)], [], "l", 1)).refused is None
    assert (await backend.acquire([rate(4, cost=1)], [], "l", 1)).refused == 0
    await backend.adjust([rate(4, cost=-2)])
    assert (await backend.acquire([rate(4, cost=2)], [], "l", 1)).refused is None
    assert (await backend.acquire([rate(4, cost=1)], [], "l", 1)).refused == 0


async def test_stream_slots_are_leased_and_released(backend: Backend) -> None:
    slot = Slot("acme:t:s", 1, "concurrent_streams", "tenant:acme")
    assert (await backend.acquire([], [slot], "first", 60)).refused is None
    refused = await backend.acquire([], [slot], "second", 60)
    assert refused.refused == 0
    assert refused.wait_s == 1.0
    await backend.release([slot], "first")
    assert (await backend.acquire([], [slot], "second", 60)).refused is None


async def test_an_abandoned_lease_expires(backend: Backend) -> None:
    slot = Slot("acme:t:s", 1, "concurrent_streams", "tenant:acme")
    assert (await backend.acquire([], [slot], "crashed", 0.2)).refused is None
    for _ in range(100):  # bounded: the lease lasts 0.2 s
        if (await backend.acquire([], [slot], "next", 60)).refused is None:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the abandoned lease never expired")


async def test_memory_waits_are_exact_on_a_clock() -> None:
    clock = FakeClock()
    backend = MemoryBackend(clock)
    for _ in range(2):
        assert (await backend.acquire([rate(2)], [], "l", 1)).refused is None
    refused = await backend.acquire([rate(2)], [], "l", 1)
    assert refused.wait_s == pytest.approx(30.0)
    clock.now += 29.9
    assert (await backend.acquire([rate(2)], [], "l", 1)).refused == 0
    clock.now += 0.1
    assert (await backend.acquire([rate(2)], [], "l", 1)).refused is None


async def test_every_redis_key_has_a_ttl(redis_prefix: str) -> None:
    backend = RedisBackend.from_url(REDIS_URL, redis_prefix, timeout_s=2.0)
    slot = Slot("acme:t:s", 5, "concurrent_streams", "tenant:acme")
    await backend.acquire([rate(5), rate(100, 7, "acme:k:abc:tok")], [slot], "l", 30)
    await backend.adjust([rate(100, 3, "acme:k:abc:tok")])
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        assert len(keys) == 3
        assert all(k.decode().startswith(f"{redis_prefix}{{acme}}:") for k in keys)
        for k in keys:
            assert 0 < await client.pttl(k) <= 61_000 + 30_000
    finally:
        await client.aclose()
        await backend.aclose()


# The limiter --------------------------------------------------------------------------------


def limiter(config: RateLimitsConfig, clock: Callable[[], float] | None = None) -> RateLimiter:
    return RateLimiter(config, MemoryBackend(clock or FakeClock()))


async def test_key_overrides_bind_before_tenant_defaults() -> None:
    lim = limiter(
        RateLimitsConfig(
            tenant=LimitsConfig(requests_per_min=10),
            keys={"k1": LimitsConfig(requests_per_min=1)},
        )
    )
    assert await lim.acquire("acme", "k1", 1, stream=False, lease_s=1) is not None
    with pytest.raises(ResourceExhausted) as info:
        await lim.acquire("acme", "k1", 1, stream=False, lease_s=1)
    assert info.value.violations[0].subject == "key:k1"
    assert info.value.violations[0].description.startswith("requests_per_min: 1 ")
    assert info.value.retry_after_s == pytest.approx(60.0)
    # Another key of the same tenant still has the tenant's room.
    assert await lim.acquire("acme", "k2", 1, stream=False, lease_s=1) is not None


async def test_tokens_are_reconciled_with_real_usage() -> None:
    lim = limiter(RateLimitsConfig(tenant=LimitsConfig(tokens_per_min=100)))
    ticket = await lim.acquire("acme", "", 10, stream=False, lease_s=1)
    assert ticket is not None
    await lim.finish(ticket, 95)  # the call really used 95
    with pytest.raises(ResourceExhausted) as info:
        await lim.acquire("acme", "", 10, stream=False, lease_s=1)
    assert "tokens per minute" in info.value.message
    # A call that reported no usage gives its estimate back.
    lim = limiter(RateLimitsConfig(tenant=LimitsConfig(tokens_per_min=100)))
    ticket = await lim.acquire("acme", "", 100, stream=False, lease_s=1)
    assert ticket is not None
    await lim.finish(ticket, None)
    assert await lim.acquire("acme", "", 100, stream=False, lease_s=1) is not None


async def test_a_request_larger_than_the_limit_has_no_retry_delay() -> None:
    lim = limiter(RateLimitsConfig(tenant=LimitsConfig(tokens_per_min=100)))
    with pytest.raises(ResourceExhausted, match="alone exceeds") as info:
        await lim.acquire("acme", "", 101, stream=False, lease_s=1)
    assert info.value.retry_after_s is None


def dead_redis_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there now


@pytest.mark.parametrize("on_error", ["open", "closed"])
async def test_redis_down_fails_open_or_closed_and_says_so(on_error: str) -> None:
    config = RateLimitsConfig(
        backend="redis",
        redis=RedisLimiterConfig(url=dead_redis_url(), on_error=on_error, timeout_s=1.0),  # type: ignore[arg-type]
        tenant=LimitsConfig(requests_per_min=5),
    )
    states: list[bool] = []
    errors: list[int] = []

    async def on_state(up: bool) -> None:
        states.append(up)

    lim = RateLimiter(
        config,
        RedisBackend.from_url(config.redis.url, "test:", 1.0),
        on_state=on_state,
        on_backend_error=lambda: errors.append(1),
    )
    try:
        for _ in range(5):
            if on_error == "open":
                assert await lim.acquire("acme", "", 1, stream=False, lease_s=1) is None
            else:
                with pytest.raises(Unavailable, match="rate limiter unavailable"):
                    await lim.acquire("acme", "", 1, stream=False, lease_s=1)
        # Three failures in a row mark it down; then calls no longer wait on it.
        assert errors == [1] * DOWN_AFTER_FAILURES
        assert states == [False]
    finally:
        await lim.aclose()


# Through the server ---------------------------------------------------------------------------

LIMITS = """
rate_limits:
  tenant: {requests_per_min: 2}
"""


async def test_one_tenant_cannot_exhaust_another(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",)), ("globex", ("*",))])
    async with serve_config(auth_config(path, LIMITS)) as served:
        acme = AsyncClient(served.address, channel=served.channel, api_key=keys[0])
        globex = AsyncClient(served.address, channel=served.channel, api_key=keys[1])
        await acme.invoke("echo", "one")
        await acme.invoke("echo", "two")
        with pytest.raises(ResourceExhaustedError) as info:
            await acme.invoke("echo", "three")
        assert info.value.retry_after_s is not None
        assert 25.0 <= info.value.retry_after_s <= 30.0
        assert [(v.subject, v.description) for v in info.value.violations] == [
            ("tenant:acme", "requests_per_min: 2 requests per minute")
        ]
        with pytest.raises(ResourceExhaustedError):
            async for _ in acme.stream("echo", "four"):
                pass
        assert (await globex.invoke("echo", "still served")).agent == "echo"
        refusals = served.app.metrics.ratelimit_refusals.labels("requests_per_min")
        assert refusals._value.get() == 2
        # Health is never limited.
        health = health_pb2_grpc.HealthStub(served.channel)
        for _ in range(5):
            await health.Check(health_pb2.HealthCheckRequest())


async def test_tokens_per_minute_counts_real_usage_through_the_server() -> None:
    # "a b c d e f g h" is 15 characters, estimated 3 tokens; echo really uses 8 in, 8 out.
    config = """
rate_limits:
  tenant: {tokens_per_min: 20}
targets:
  mock-echo: {provider: mock, model: echo}
agents:
  echo: {route: [mock-echo]}
"""
    async with serve_config(config) as served:
        await served.client.invoke("echo", "a b c d e f g h")
        events = [e async for e in served.client.stream("echo", "a b c d e f g h")]
        assert events[-1].WhichOneof("event") == "finish"
        with pytest.raises(ResourceExhaustedError) as info:
            await served.client.invoke("echo", "a b c d e f g h")
        assert info.value.violations[0].subject == "tenant:default"
        assert info.value.violations[0].description.startswith("tokens_per_min")


async def test_concurrent_streams_are_limited_and_freed() -> None:
    config = """
rate_limits:
  tenant: {concurrent_streams: 1}
targets:
  slow: {provider: mock, model: echo, mock: {tokens_per_s: 2}}
agents:
  echo: {route: [slow]}
"""
    async with serve_config(config) as served:
        first = served.client.stream("echo", "one two three four five six")
        assert (await anext(first)).WhichOneof("event") == "start"
        with pytest.raises(ResourceExhaustedError) as info:
            async for _ in served.client.stream("echo", "second"):
                pass
        assert info.value.violations[0].description.startswith("concurrent_streams: 1")
        assert info.value.retry_after_s == 1.0
        await first.aclose()  # the caller hangs up: the slot is released
        for _ in range(100):  # bounded wait for the server to see the cancellation
            try:
                events = [e async for e in served.client.stream("echo", "third")]
                break
            except ResourceExhaustedError:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the stream slot was never released")
        assert events[-1].WhichOneof("event") == "finish"


async def test_redis_down_shows_in_health_and_metrics() -> None:
    config = f"""
rate_limits:
  backend: redis
  redis: {{url: "{dead_redis_url()}", on_error: closed, timeout_s: 1.0}}
  tenant: {{requests_per_min: 100}}
targets:
  mock-echo: {{provider: mock, model: echo}}
agents:
  echo: {{route: [mock-echo]}}
"""
    async with serve_config(config) as served:
        health = health_pb2_grpc.HealthStub(served.channel)
        request = health_pb2.HealthCheckRequest(service="switchboard.ratelimit")
        assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
        for _ in range(DOWN_AFTER_FAILURES + 1):
            with pytest.raises(UnavailableError, match="rate limiter unavailable"):
                await served.client.invoke("echo", "hi")
        assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert served.app.metrics.ratelimit_backend_up._value.get() == 0
        # Down after three failures in a row; the fourth call did not wait on Redis.
        assert served.app.metrics.ratelimit_backend_errors._value.get() == DOWN_AFTER_FAILURES


class FlakyBackend(MemoryBackend):
    """A memory backend whose next ``fail`` acquires raise BackendError (a timeout)."""

    def __init__(self) -> None:
        super().__init__(FakeClock())
        self.fail = 0
        self.asked = 0

    async def acquire(
        self, rates: Sequence[Rate], slots: Sequence[Slot], lease_id: str, lease_s: float
    ) -> Decision:
        self.asked += 1
        if self.fail:
            self.fail -= 1
            raise BackendError("redis: TimeoutError")
        return await super().acquire(rates, slots, lease_id, lease_s)


async def test_one_failed_command_does_not_let_the_next_calls_through_uncounted() -> None:
    # Issue 12 §6: one Redis timeout during a burst used to pause the limiter, and with
    # on_error open every call in the pause went through uncounted (up to 3x the limit).
    config = RateLimitsConfig(
        backend="redis",
        redis=RedisLimiterConfig(on_error="open"),
        tenant=LimitsConfig(requests_per_min=3),
    )
    states: list[bool] = []

    async def on_state(up: bool) -> None:
        states.append(up)

    backend = FlakyBackend()
    lim = RateLimiter(config, backend, on_state=on_state)
    backend.fail = 1
    assert await lim.acquire("acme", "", 1, stream=False, lease_s=1) is None  # let through
    for _ in range(3):
        await lim.acquire("acme", "", 1, stream=False, lease_s=1)
    with pytest.raises(ResourceExhausted):  # the fifth call is decided, exactly
        await lim.acquire("acme", "", 1, stream=False, lease_s=1)
    assert backend.asked == 5
    assert states == []  # health never flipped
    await lim.aclose()
