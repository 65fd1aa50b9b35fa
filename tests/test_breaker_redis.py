"""Breaker state shared through a real Redis (127.0.0.1:6379): replicas see each other's
open circuits. Each test uses its own key namespace and deletes it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
import redis

from service.errors import Unavailable
from service.routing.breaker import CLOSED, OPEN, BreakerOpen, redis_storage
from service.routing.policy import BreakerPolicy, RedisStorageSpec, ResilienceSpec
from service.routing.registry import TargetRegistry
from tests.chaos import mock
from tests.harness import serve_config

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"sb-test-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_replicas_share_an_open_circuit(namespace: str) -> None:
    spec = ResilienceSpec(default_breaker=BreakerPolicy(fail_max=2, reset_timeout_s=60))
    storage_1, close_1 = redis_storage(RedisStorageSpec(URL, namespace))
    storage_2, close_2 = redis_storage(RedisStorageSpec(URL, namespace))
    seen: list[tuple[str, str]] = []
    try:
        one = TargetRegistry(spec, storage=storage_1)
        two = TargetRegistry(spec, storage=storage_2)
        two.subscribe(lambda target, state: seen.append((target, state)))
        assert two.get("a").breaker.state == CLOSED

        for _ in range(2):
            one.get("a").breaker.admit().failed(Unavailable("down"))
        assert one.get("a").breaker.state == OPEN

        with pytest.raises(BreakerOpen) as refused:
            two.get("a").breaker.admit()
        assert refused.value.retry_after_s is not None
        assert ("a", OPEN) in seen  # the other replica's listeners learn of it too
        assert two.get("b").breaker.state == CLOSED
    finally:
        close_1()
        close_2()


async def test_a_server_with_redis_breakers_skips_a_target_another_replica_opened(
    namespace: str,
) -> None:
    yaml = f"""
targets:
  a: {{provider: mock, model: echo}}
  b: {{provider: mock, model: echo}}
agents:
  bot: {{route: {{targets: [a, b], retry: {{max_attempts: 1}}}}}}
resilience:
  breaker: {{fail_max: 2, reset_timeout_s: 60}}
  breaker_redis: {{url: "{URL}", namespace: {namespace}}}
"""
    async with serve_config(yaml) as one, serve_config(yaml) as two:
        mock(one, "a").faults.fail_rate = 1.0
        for _ in range(2):
            answer = await one.client.invoke("bot", "hi")
            assert answer.target.name == "b"
        answer = await two.client.invoke("bot", "hi")
        assert (answer.target.name, answer.attempts) == ("b", 1)
        assert mock(two, "a").stats.started == 0


def test_an_unreachable_redis_leaves_breakers_local_instead_of_failing() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage, close = redis_storage(RedisStorageSpec(f"redis://127.0.0.1:{port}/0", "x"))
    try:
        breaker = (
            TargetRegistry(
                ResilienceSpec(default_breaker=BreakerPolicy(fail_max=1)), storage=storage
            )
            .get("a")
            .breaker
        )
        breaker.admit().failed(Unavailable("down"))
        assert breaker.state == OPEN
    finally:
        close()
