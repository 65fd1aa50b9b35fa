"""What a route does with an upstream that is out of credit or whose context window is too
small, through the real SDKs and fake upstreams: issue 11's dead Anthropic account falls back
at once, opens its breaker, and keeps being reported as a quota; a context-window error moves
the call to the route's larger-window targets."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis
from switchboard_client import (
    InvalidArgumentError,
    ResourceExhaustedError,
    SwitchboardError,
    UnavailableError,
)

from service.config import ConfigError, load
from service.errors import QuotaViolation, Reason, ResourceExhausted
from service.providers.upstream import QUOTA_DESCRIPTION
from service.routing.breaker import BreakerOpen, redis_storage
from service.routing.policy import BreakerPolicy, RedisStorageSpec, ResilienceSpec
from service.routing.registry import TargetRegistry
from tests.fakes import anthropic_fake, openai_fake
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.openai_fake import OpenAIFake
from tests.harness import Served, serve_config
from tests.provider_rigs import ANTHROPIC_KEY, OPENAI_KEY, collect

# Issue 11: an Anthropic account out of credit answers a 400 invalid_request_error.
CREDIT_TOO_LOW = anthropic_fake.Scenario(
    status=400,
    error={
        "type": "invalid_request_error",
        "message": "Your credit balance is too low to access the Anthropic API. Please go to "
        "Plans & Billing to upgrade or purchase credits.",
    },
)
# github.com/crewAIInc/crewAI-examples/issues/121
CONTEXT_TOO_LONG = openai_fake.Scenario(
    status=400,
    error={
        "message": "This model's maximum context length is 8192 tokens. However, your "
        "messages resulted in 8227 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    },
)


def config(anthropic_url: str, openai_url: str) -> str:
    return f"""
    targets:
      dead:
        provider: anthropic
        model: claude-3-7-sonnet
        base_url: {anthropic_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
      healthy: {{provider: mock, model: echo}}
      small:
        provider: openai
        model: gpt-small
        base_url: {openai_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
      big:
        provider: anthropic
        model: claude-big
        base_url: {anthropic_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
    resilience:
      targets:
        dead: {{breaker: {{fail_max: 3}}}}
    agents:
      backed: {{route: [dead, healthy]}}
      alone: {{route: [dead]}}
      wide:
        route: {{targets: [small], on_context_window_exceeded: [big]}}
      narrow:
        route: {{targets: [small], fallback: [healthy]}}
    """


@pytest.fixture
async def served() -> AsyncIterator[tuple[Served, AnthropicFake, OpenAIFake]]:
    async with (
        AnthropicFake() as ant,
        OpenAIFake() as oai,
        serve_config(
            config(ant.base_url, oai.base_url),
            {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY},
        ) as s,
    ):
        yield s, ant, oai


async def test_an_account_out_of_credit_falls_back_at_once_and_opens_its_breaker(
    served: tuple[Served, AnthropicFake, OpenAIFake],
) -> None:
    s, dead, _ = served
    dead.default = CREDIT_TOO_LOW

    for i in range(8):
        if i % 2:
            answer = await s.client.invoke("backed", f"call {i}")
            assert answer.target.name == "healthy"
            assert answer.message.content[0].text == f"call {i}"
        else:
            events, err = await collect(s.client, "backed", f"call {i}")
            assert err is None
            assert events[0].start.target.name == "healthy"

    # fail_max 3: the dead account was reached three times, then its circuit opened.
    assert len(dead.received) == 3
    assert s.app.targets.get("dead").breaker.state == "open"


async def test_a_circuit_opened_by_a_quota_still_says_quota(
    served: tuple[Served, AnthropicFake, OpenAIFake],
) -> None:
    s, dead, _ = served
    dead.default = CREDIT_TOO_LOW
    for _ in range(3):
        with pytest.raises(ResourceExhaustedError) as caught:
            await s.client.invoke("alone", "hi")
        assert caught.value.reason == "UPSTREAM_QUOTA_EXHAUSTED"
    assert len(dead.received) == 3

    # The circuit is open now: no upstream call, and still a quota, not "circuit open".
    with pytest.raises(ResourceExhaustedError) as caught:
        await s.client.invoke("alone", "hi")
    _, stream_error = await collect(s.client, "alone", "hi")
    for err in (caught.value, stream_error):
        assert err is not None
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.reason == "UPSTREAM_QUOTA_EXHAUSTED"
        assert [v.subject for v in err.violations] == ["target:dead"]
        assert "credit balance is too low" in err.message
        assert err.metadata["target"] == "dead"
    assert len(dead.received) == 3


async def test_a_circuit_opened_by_outages_says_circuit_open(
    served: tuple[Served, AnthropicFake, OpenAIFake],
) -> None:
    s, dead, _ = served
    dead.default = anthropic_fake.Scenario(status=529)
    for _ in range(3):
        with pytest.raises(UnavailableError) as caught:
            await s.client.invoke("alone", "hi")
        assert caught.value.reason == "UPSTREAM_OVERLOADED"
    with pytest.raises(UnavailableError) as caught:
        await s.client.invoke("alone", "hi")
    assert caught.value.reason == "CIRCUIT_OPEN"
    assert caught.value.metadata["target"] == "dead"
    assert caught.value.retry_after_s is not None
    assert len(dead.received) == 3


async def test_context_window_exceeded_moves_to_the_larger_window_targets(
    served: tuple[Served, AnthropicFake, OpenAIFake],
) -> None:
    s, big, small = served
    small.default = CONTEXT_TOO_LONG

    answer = await s.client.invoke("wide", "a very long prompt")
    events, err = await collect(s.client, "wide", "a very long prompt")

    assert answer.target.name == "big"
    assert answer.message.content[0].text == "Hello from the fake Claude."
    assert err is None
    assert events[0].start.target.name == "big"
    assert len(small.received) == 2
    assert len(big.received) == 2


async def test_context_window_exceeded_without_the_option_ends_the_call(
    served: tuple[Served, AnthropicFake, OpenAIFake],
) -> None:
    s, _, small = served
    small.default = CONTEXT_TOO_LONG

    # Six calls: a context-window error is the request's, so it never opens the breaker
    # (default fail_max 5) and never falls back to a target with the same window.
    for _ in range(6):
        with pytest.raises(InvalidArgumentError) as caught:
            await s.client.invoke("narrow", "a very long prompt")
        assert caught.value.reason == "CONTEXT_WINDOW_EXCEEDED"
        assert caught.value.metadata["target"] == "small"
        assert "maximum context length is 8192" in caught.value.message
    assert len(small.received) == 6
    assert s.app.targets.get("small").breaker.state == "closed"


async def test_context_window_exceeded_on_the_larger_target_too_ends_the_call(
    served: tuple[Served, AnthropicFake, OpenAIFake],
) -> None:
    s, big, small = served
    small.default = CONTEXT_TOO_LONG
    big.default = anthropic_fake.Scenario(
        status=400,
        error={
            "type": "invalid_request_error",
            "message": "prompt is too long: 219898 tokens > 200000 maximum",
        },
    )

    with pytest.raises(InvalidArgumentError) as caught:
        await s.client.invoke("wide", "an even longer prompt")

    assert caught.value.reason == "CONTEXT_WINDOW_EXCEEDED"
    assert caught.value.metadata["target"] == "big"
    assert (len(small.received), len(big.received)) == (1, 1)


def test_on_context_window_exceeded_names_known_targets(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
auth: {enabled: false}
targets: {m: {provider: mock, model: echo}}
agents:
  a: {route: {targets: [m], on_context_window_exceeded: [nope]}}
"""
    )
    with pytest.raises(ConfigError, match="no target named 'nope'"):
        load(path, {})


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        ("context_window_exceeded", grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_WINDOW_EXCEEDED"),
        ("content_policy", grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_CONTENT_POLICY"),
        ("resource_exhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_QUOTA_EXHAUSTED"),
        ("unauthenticated", grpc.StatusCode.INTERNAL, "UPSTREAM_AUTH_FAILED"),
        ("model_not_found", grpc.StatusCode.FAILED_PRECONDITION, "UPSTREAM_MODEL_NOT_FOUND"),
        ("unavailable", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        ("overloaded", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_OVERLOADED"),
        ("rate_limited", grpc.StatusCode.UNAVAILABLE, "UPSTREAM_RATE_LIMITED"),
    ],
)
async def test_the_mock_provider_fails_as_the_sdk_providers_do(
    fault: str, code: grpc.StatusCode, reason: str
) -> None:
    mock_config = f"""
    targets:
      small: {{provider: mock, model: echo, mock: {{fail_rate: 1, error: {fault}}}}}
      big: {{provider: mock, model: echo}}
    agents:
      alone: {{route: [small]}}
      wide: {{route: {{targets: [small], on_context_window_exceeded: [big]}}}}
    """
    async with serve_config(mock_config) as s:
        with pytest.raises(SwitchboardError) as caught:
            await s.client.invoke("alone", "hi")
        assert (caught.value.code, caught.value.reason) == (code, reason)
        assert caught.value.metadata["target"] == "small"
        if fault == "context_window_exceeded":
            assert (await s.client.invoke("wide", "hi")).target.name == "big"


def test_replicas_sharing_breakers_report_a_quota_another_replica_saw() -> None:
    url = "redis://127.0.0.1:6379/0"
    namespace = f"sb-test-{uuid.uuid4().hex}"
    spec = ResilienceSpec(default_breaker=BreakerPolicy(fail_max=2, reset_timeout_s=60))
    storage_1, close_1 = redis_storage(RedisStorageSpec(url, namespace))
    storage_2, close_2 = redis_storage(RedisStorageSpec(url, namespace))
    try:
        one, two = TargetRegistry(spec, storage=storage_1), TargetRegistry(spec, storage=storage_2)
        quota = ResourceExhausted(
            "target 'a': the upstream account is out of credit",
            violations=[QuotaViolation("target:a", QUOTA_DESCRIPTION)],
            reason=Reason.UPSTREAM_QUOTA_EXHAUSTED,
        ).overriding(counts_against_breaker=True)
        for _ in range(2):
            one.get("a").breaker.admit().failed(quota)

        with pytest.raises(BreakerOpen) as refused:
            two.get("a").breaker.admit()
        cause = refused.value.cause
        assert isinstance(cause, ResourceExhausted)
        assert cause.reason == Reason.UPSTREAM_QUOTA_EXHAUSTED
        assert [v.subject for v in cause.violations] == ["target:a"]
        assert "out of credit" in refused.value.message
    finally:
        close_1()
        close_2()
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()
