"""The anthropic provider's failures through the real SDK: every upstream error's status and
details, error events, truncated streams, timeouts and cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from switchboard_client import (
    DeadlineExceededError,
    InvalidArgumentError,
    SwitchboardError,
    UnavailableError,
)

from tests.fakes.anthropic_fake import AnthropicFake, Scenario
from tests.harness import serve_config
from tests.provider_rigs import (
    ANTHROPIC_KEY,
    Rig,
    anthropic_config,
    anthropic_rig,
    collect,
    kinds,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["first request", "later request"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig[AnthropicFake]]:
    """Each test twice: as the target's first request (the SDK's, body included) and as a later
    one (its URL and headers, our body: service/providers/sending.py)."""
    async with anthropic_rig(warmed=request.param == "later request") as r:
        yield r


# --- errors -------------------------------------------------------------------------------------


def error(kind: str, message: str, code: str | None = None) -> dict[str, object]:
    out: dict[str, object] = {"type": kind, "message": message}
    if code:
        out["details"] = {"error_code": code}
    return out


@pytest.mark.parametrize(
    ("scenario", "code", "says", "retry_after"),
    [
        pytest.param(
            Scenario(
                status=400, error=error("invalid_request_error", "messages: roles must alternate")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "roles must alternate",
            None,
            id="400",
        ),
        pytest.param(
            Scenario(
                status=413, error=error("request_too_large", "Request exceeds the maximum size")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "maximum size",
            None,
            id="413",
        ),
        pytest.param(
            Scenario(
                status=401,
                error=error("authentication_error", f"invalid x-api-key {ANTHROPIC_KEY}"),
            ),
            grpc.StatusCode.INTERNAL,
            "upstream rejected Switchboard's credentials for target 'claude'",
            None,
            id="401",
        ),
        pytest.param(
            Scenario(status=403, error=error("permission_error", "no access to this model")),
            grpc.StatusCode.INTERNAL,
            "credentials for target 'claude'",
            None,
            id="403",
        ),
        pytest.param(
            Scenario(status=404, error=error("not_found_error", "model: claude-fake")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "does not know model 'claude-fake'",
            None,
            id="404",
        ),
        pytest.param(
            Scenario(
                status=429,
                headers={"retry-after": "11"},
                error=error(
                    "rate_limit_error",
                    "Number of request tokens has exceeded your per-minute rate limit",
                ),
            ),
            grpc.StatusCode.UNAVAILABLE,
            "rate limiting",
            11.0,
            id="429",
        ),
        pytest.param(
            Scenario(
                status=429,
                headers={"retry-after": "30"},
                error=error(
                    "rate_limit_error",
                    "You have reached your specified API usage limits.",
                    "enforced_spend_limit_reached",
                ),
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "spend limit is exhausted",
            None,
            id="429-spend-limit",
        ),
        pytest.param(
            Scenario(status=402, error=error("billing_error", "Your credit balance is too low")),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "credit balance is too low",
            None,
            id="402-billing",
        ),
        pytest.param(
            Scenario(status=500, error=error("api_error", "Internal server error")),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 500",
            None,
            id="500",
        ),
        pytest.param(
            Scenario(
                status=529,
                headers={"retry-after": "3"},
                error=error("overloaded_error", "Overloaded"),
            ),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 529",
            3.0,
            id="529",
        ),
    ],
)
async def test_upstream_errors_map_to_statuses(
    rig: Rig[AnthropicFake],
    scenario: Scenario,
    code: grpc.StatusCode,
    says: str,
    retry_after: float | None,
) -> None:
    rig.fake.push(scenario, scenario)
    with pytest.raises(SwitchboardError) as caught:
        await rig.client.invoke("chat", "hi")
    events, stream_error = await collect(rig.client, "chat", "hi")

    for err in (caught.value, stream_error):
        assert err is not None
        assert err.code == code
        assert says in err.message
        assert err.retry_after_s == retry_after
        assert ANTHROPIC_KEY not in err.message
    assert events == []


async def test_error_event_mid_stream_ends_the_stream_with_a_status(
    rig: Rig[AnthropicFake],
) -> None:
    # message_start, content_block_start, ping, then the first text delta: the error comes next.
    rig.fake.push(Scenario(text="a b c d", pieces=4, error_after=4))
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, UnavailableError)
    assert kinds(events) == ["start", "text_delta"]
    assert "overloaded_error mid-stream" in err.message
    assert "Overloaded" in err.message


async def test_invalid_request_error_event_mid_stream_is_invalid_argument(
    rig: Rig[AnthropicFake],
) -> None:
    rig.fake.push(
        Scenario(error_after=4, stream_error=error("invalid_request_error", "prompt is too long"))
    )
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, InvalidArgumentError)
    assert "prompt is too long" in err.message
    assert kinds(events) == ["start", "text_delta"]


async def test_missing_message_stop_is_unavailable(rig: Rig[AnthropicFake]) -> None:
    rig.fake.push(Scenario(omit_stop=True), Scenario(omit_stop=True))
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, UnavailableError)
    assert "no message_stop" in err.message
    assert "".join(e.text_delta.text for e in events) == "Hello from the fake Claude."
    assert "finish" not in kinds(events)
    with pytest.raises(UnavailableError):
        await rig.client.invoke("chat", "hi")


async def test_disconnect_mid_stream_is_unavailable_after_the_deltas(
    rig: Rig[AnthropicFake],
) -> None:
    rig.fake.push(Scenario(text="a b c d e f", pieces=6, disconnect_after=5, chunk_delay_s=0.02))
    events, err = await collect(rig.client, "chat", "hi")

    assert isinstance(err, UnavailableError)
    assert kinds(events) == ["start", "text_delta", "text_delta"]
    assert "lost before the answer finished" in err.message


async def test_unreachable_upstream_is_unavailable() -> None:
    async with AnthropicFake() as fake:
        url = fake.base_url
    # The fake is gone: nothing listens on its port any more.
    config = anthropic_config(url)
    async with serve_config(config, {"ANTHROPIC_API_KEY": ANTHROPIC_KEY}) as served:
        with pytest.raises(UnavailableError) as caught:
            await served.client.invoke("chat", "hi")

    assert "connection to the upstream failed" in caught.value.message


async def test_target_timeout_is_deadline_exceeded_and_closes_the_request(
    rig: Rig[AnthropicFake],
) -> None:
    rig.fake.push(Scenario(hang=True))
    with pytest.raises(DeadlineExceededError) as caught:
        await rig.client.invoke("short", "hi", timeout=30)

    assert "timeout_s of 0.5s" in caught.value.message
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_cancelling_the_stream_closes_the_upstream_response(rig: Rig[AnthropicFake]) -> None:
    rig.fake.push(Scenario(text="word " * 200, pieces=200, chunk_delay_s=0.05))
    async for event in rig.client.stream("chat", "talk a lot"):
        if event.WhichOneof("event") == "text_delta":
            break

    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)
    assert rig.fake.completed == 0


async def test_headers_then_silence_is_deadline_exceeded(rig: Rig[AnthropicFake]) -> None:
    # The status line and headers come at once; the first event never comes in time.
    rig.fake.push(Scenario(first_chunk_delay_s=30))
    events, err = await collect(rig.client, "short", "hi", timeout=30)

    assert isinstance(err, DeadlineExceededError)
    assert events == []
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)
