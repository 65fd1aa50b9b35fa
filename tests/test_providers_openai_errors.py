"""The openai provider's failures through the real SDK: every upstream error's status and
details, truncated and failing streams, timeouts and cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from switchboard_client import DeadlineExceededError, SwitchboardError, UnavailableError

from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import serve_config
from tests.provider_rigs import (
    OPENAI_KEY,
    Rig,
    collect,
    kinds,
    openai_config,
    openai_rig,
)

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["first request", "later request"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig[OpenAIFake]]:
    """Each test twice: as the target's first request (the SDK's, body included) and as a later
    one (its URL and headers, our body: service/providers/sending.py)."""
    async with openai_rig(warmed=request.param == "later request") as r:
        yield r


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "code", "says", "retry_after"),
    [
        pytest.param(
            Scenario(
                status=400,
                error={"message": "'temperature' is too high", "type": "invalid_request_error"},
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "'temperature' is too high",
            None,
            id="400",
        ),
        pytest.param(
            Scenario(
                status=422, error={"message": "unprocessable", "type": "invalid_request_error"}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unprocessable",
            None,
            id="422",
        ),
        pytest.param(
            Scenario(
                status=401,
                error={
                    "message": f"Incorrect API key provided: {OPENAI_KEY}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                },
            ),
            grpc.StatusCode.INTERNAL,
            "upstream rejected Switchboard's credentials for target 'gpt'",
            None,
            id="401",
        ),
        pytest.param(
            Scenario(
                status=403, error={"message": "Country not supported", "type": "permission_error"}
            ),
            grpc.StatusCode.INTERNAL,
            "credentials for target 'gpt'",
            None,
            id="403",
        ),
        pytest.param(
            Scenario(
                status=404,
                error={
                    "message": "The model `gpt-fake` does not exist",
                    "type": "invalid_request_error",
                    "code": "model_not_found",
                },
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "does not know model 'gpt-fake'",
            None,
            id="404",
        ),
        pytest.param(
            Scenario(status=429, headers={"retry-after": "7"}),
            grpc.StatusCode.UNAVAILABLE,
            "rate limiting",
            7.0,
            id="429-retry-after",
        ),
        pytest.param(
            Scenario(status=429, headers={"retry-after-ms": "1500", "retry-after": "9"}),
            grpc.StatusCode.UNAVAILABLE,
            "rate limiting",
            1.5,
            id="429-retry-after-ms",
        ),
        pytest.param(
            Scenario(
                status=429,
                headers={"retry-after": "20"},
                error={
                    "message": "You exceeded your current quota, please check your plan.",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                },
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "quota or spend limit is exhausted",
            None,
            id="429-quota",
        ),
        pytest.param(
            Scenario(status=500),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 500",
            None,
            id="500",
        ),
        pytest.param(
            Scenario(status=503, headers={"retry-after": "2"}),
            grpc.StatusCode.UNAVAILABLE,
            "HTTP 503",
            2.0,
            id="503",
        ),
    ],
)
async def test_upstream_errors_map_to_statuses(
    rig: Rig[OpenAIFake],
    scenario: Scenario,
    code: grpc.StatusCode,
    says: str,
    retry_after: float | None,
) -> None:
    for call in ("invoke", "stream"):
        rig.fake.push(scenario)
        if call == "invoke":
            with pytest.raises(SwitchboardError) as caught:
                await rig.client.invoke("chat", "hi")
            error = caught.value
        else:
            events, stream_error = await collect(rig.client, "chat", "hi")
            assert events == []
            assert stream_error is not None
            error = stream_error

        assert error.code == code, call
        assert says in error.message
        assert error.retry_after_s == retry_after
        assert OPENAI_KEY not in error.message
        assert "sk-test" not in error.message


async def test_quota_error_carries_quota_failure_not_retry_info(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(
        Scenario(
            status=429,
            headers={"retry-after": "20"},
            error={"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"},
        )
    )
    with pytest.raises(SwitchboardError) as caught:
        await rig.client.invoke("chat", "hi")

    assert caught.value.retry_after_s is None
    assert [v.subject for v in caught.value.violations] == ["target:gpt"]


async def test_upstream_message_is_sanitised_and_cut(rig: Rig[OpenAIFake]) -> None:
    message = f"bad request for key {OPENAI_KEY} (Authorization: Bearer {OPENAI_KEY}) " + "x" * 2000
    rig.fake.push(Scenario(status=400, error={"message": message, "type": "invalid_request_error"}))
    with pytest.raises(SwitchboardError) as caught:
        await rig.client.invoke("chat", "hi")

    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert OPENAI_KEY not in caught.value.message
    assert "***" in caught.value.message
    assert len(caught.value.message) < 500


# --- truncated and failing streams ----------------------------------------------------------


async def test_disconnect_mid_stream_is_unavailable_after_the_deltas(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(Scenario(text="a b c d e f", pieces=6, disconnect_after=4, chunk_delay_s=0.02))
    events, error = await collect(rig.client, "chat", "hi")

    assert isinstance(error, UnavailableError)
    assert kinds(events) == ["start", "text_delta", "text_delta", "text_delta"]
    assert "lost before the answer finished" in error.message


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(Scenario(omit_finish=True, omit_usage=True, omit_done=True), id="no-finish"),
        pytest.param(Scenario(omit_usage=True, omit_done=True), id="no-usage"),
        pytest.param(Scenario(omit_finish=True), id="usage-but-no-finish"),
    ],
)
async def test_stream_ending_before_it_finished_is_unavailable(
    rig: Rig[OpenAIFake], scenario: Scenario
) -> None:
    rig.fake.push(scenario, scenario)
    events, error = await collect(rig.client, "chat", "hi")

    assert isinstance(error, UnavailableError)
    assert "ended before it finished" in error.message
    assert "finish" not in kinds(events)
    assert "".join(e.text_delta.text for e in events) == "Hello from the fake OpenAI."
    with pytest.raises(UnavailableError):
        await rig.client.invoke("chat-streamed", "hi")  # an Invoke that streams, too


async def test_error_event_mid_stream_ends_the_stream_with_a_status(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(Scenario(text="a b c d", pieces=4, error_after=3, chunk_delay_s=0.02))
    events, error = await collect(rig.client, "chat", "hi")

    assert isinstance(error, UnavailableError)
    assert kinds(events) == ["start", "text_delta", "text_delta"]
    assert "error while processing your request" in error.message
    assert "server_error mid-stream" in error.message


async def test_target_timeout_is_deadline_exceeded_and_closes_the_request(
    rig: Rig[OpenAIFake],
) -> None:
    rig.fake.push(Scenario(hang=True))
    with pytest.raises(DeadlineExceededError) as caught:
        await rig.client.invoke("quick", "hi", timeout=30)

    assert "timeout_s of 0.5s" in caught.value.message
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_slow_chunks_past_the_target_timeout_are_deadline_exceeded(
    rig: Rig[OpenAIFake],
) -> None:
    # The first chunks come at once, the rest too slowly: the limit covers the whole answer.
    rig.fake.push(Scenario(text="word " * 40, pieces=40, chunk_delay_s=0.25))
    events, error = await collect(rig.client, "capped", "hi", timeout=60)

    assert isinstance(error, DeadlineExceededError)
    assert "timeout_s of 2s" in error.message
    assert kinds(events)[:2] == ["start", "text_delta"]
    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_callers_deadline_bounds_the_upstream_call(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(Scenario(hang=True))
    with pytest.raises(DeadlineExceededError):
        await rig.client.invoke("chat", "hi", timeout=0.5)

    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)


async def test_cancelling_the_stream_closes_the_upstream_response(rig: Rig[OpenAIFake]) -> None:
    rig.fake.push(Scenario(text="word " * 200, pieces=200, chunk_delay_s=0.05))
    async for event in rig.client.stream("chat", "talk a lot"):
        if event.WhichOneof("event") == "text_delta":
            break

    await rig.fake.wait_for(lambda: rig.fake.abandoned == 1)
    assert rig.fake.completed == 0


async def test_unreachable_upstream_is_unavailable() -> None:
    async with OpenAIFake() as fake:
        url = fake.base_url
    # The fake is gone: nothing listens on its port any more.
    async with serve_config(openai_config(url), {"OPENAI_API_KEY": OPENAI_KEY}) as served:
        with pytest.raises(UnavailableError) as caught:
            await served.client.invoke("chat", "hi")

    assert "connection to the upstream failed" in caught.value.message
