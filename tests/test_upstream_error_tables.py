"""Each provider's error table against the error bodies the real upstreams send, through the
real SDKs and the fake upstreams: the status, the ErrorInfo reason and the details a caller
gets. Every body below is quoted from a public report of it (the source is beside it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from switchboard_client import SwitchboardError

from tests.fakes import anthropic_fake, openai_fake
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.openai_fake import OpenAIFake
from tests.provider_rigs import (
    ANTHROPIC_KEY,
    OPENAI_KEY,
    Rig,
    anthropic_rig,
    collect,
    kinds,
    openai_rig,
)

OK = grpc.StatusCode
QUOTA = (OK.RESOURCE_EXHAUSTED, "UPSTREAM_QUOTA_EXHAUSTED")
WINDOW = (OK.INVALID_ARGUMENT, "CONTEXT_WINDOW_EXCEEDED")
POLICY = (OK.INVALID_ARGUMENT, "UPSTREAM_CONTENT_POLICY")
INVALID = (OK.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST")
AUTH = (OK.INTERNAL, "UPSTREAM_AUTH_FAILED")
PERMISSION = (OK.INTERNAL, "UPSTREAM_PERMISSION_DENIED")
MODEL = (OK.FAILED_PRECONDITION, "UPSTREAM_MODEL_NOT_FOUND")
RATE = (OK.UNAVAILABLE, "UPSTREAM_RATE_LIMITED")
OVERLOADED = (OK.UNAVAILABLE, "UPSTREAM_OVERLOADED")
SERVER = (OK.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


def oai(message: str, kind: Any, code: Any, param: Any = None) -> dict[str, Any]:
    """OpenAI's inner ``error`` object."""
    return {"message": message, "type": kind, "param": param, "code": code}


# (status, the ``error`` object, or the whole body of a server that sends none (vLLM's has
# "object": "error"), the agent: "local" is an openai_compatible target, the expectation).
OPENAI_BODIES = [
    # github.com/chatanywhere/GPT_API_free/issues/229
    pytest.param(
        429,
        oai(
            "You exceeded your current quota, please check your plan and billing details. For "
            "more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            "insufficient_quota",
            "insufficient_quota",
        ),
        "chat",
        QUOTA,
        id="429-insufficient_quota",
    ),
    # github.com/ayaka14732/ChatGPTAPIFree/issues/16 (older body: code null)
    pytest.param(
        429,
        oai(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            None,
        ),
        "chat",
        QUOTA,
        id="429-insufficient_quota-type-only",
    ),
    # OpenAI error-code guide: billing_hard_limit_reached
    pytest.param(
        400,
        oai(
            "Billing hard limit has been reached",
            "invalid_request_error",
            "billing_hard_limit_reached",
        ),
        "chat",
        QUOTA,
        id="400-billing_hard_limit",
    ),
    # github.com/continuedev/continue/issues/9942 (DeepSeek, an OpenAI-compatible server)
    pytest.param(
        402,
        oai("Insufficient Balance", "unknown_error", "invalid_request_error"),
        "local",
        QUOTA,
        id="402-insufficient-balance",
    ),
    # github.com/crewAIInc/crewAI-examples/issues/121
    pytest.param(
        400,
        oai(
            "This model's maximum context length is 8192 tokens. However, your messages "
            "resulted in 8227 tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
        "chat",
        WINDOW,
        id="400-context_length_exceeded",
    ),
    # github.com/THUDM/LongBench/issues/104 (vLLM: no "error" wrapper, code is the status)
    pytest.param(
        400,
        {
            "object": "error",
            "message": "This model's maximum context length is 131072 tokens. However, you "
            "requested 351430 tokens. Please reduce the length of the messages or completion.",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
        "local",
        WINDOW,
        id="400-vllm-context",
    ),
    # github.com/oobabooga/textgen/issues/7257 (llama.cpp server)
    pytest.param(
        400,
        {
            "code": 400,
            "message": "the request exceeds the available context size. try increasing the "
            "context size or enable context shift",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 14429,
            "n_ctx": 8192,
        },
        "local",
        WINDOW,
        id="400-llamacpp-context",
    ),
    # github.com/ggml-org/llama.cpp/issues/19774 (older llama.cpp server: a 500)
    pytest.param(
        500,
        {"code": 500, "message": "Context size has been exceeded.", "type": "server_error"},
        "local",
        WINDOW,
        id="500-llamacpp-context",
    ),
    # github.com/stanford-crfm/helm/pull/3327 (Azure OpenAI's content filter)
    pytest.param(
        400,
        {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy. Please modify your prompt and retry. To learn more "
            "about our content filtering policies please read our documentation: "
            "https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        },
        "chat",
        POLICY,
        id="400-azure-content_filter",
    ),
    # OpenAI error-code guide: 401 Incorrect API key provided (it quotes the key back)
    pytest.param(
        401,
        oai(
            f"Incorrect API key provided: {OPENAI_KEY}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
        "chat",
        AUTH,
        id="401-invalid_api_key",
    ),
    # github.com/home-assistant/core/issues/120072
    pytest.param(
        403,
        {
            "code": "unsupported_country_region_territory",
            "message": "Country, region, or territory not supported",
            "param": None,
            "type": "request_forbidden",
        },
        "chat",
        PERMISSION,
        id="403-unsupported_country",
    ),
    # github.com/openai/openai-agents-python/issues/458
    pytest.param(
        404,
        oai(
            "The model `computer-use-preview-2025-03-11` does not exist or you do not have "
            "access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        "chat",
        MODEL,
        id="404-model_not_found",
    ),
    # github.com/continuedev/continue/issues/11472 (the body's code and type as OpenAI sends)
    pytest.param(
        429,
        oai(
            "Rate limit reached for gpt-4.1 in organization org-66tr5xhH5yhaqZAy6PAIy1Xi on "
            "tokens per min (TPM): Limit 30000, Used 18928, Requested 11159. Please try again "
            "in 174ms. Visit https://platform.openai.com/account/rate-limits to learn more.",
            "tokens",
            "rate_limit_exceeded",
        ),
        "chat",
        RATE,
        id="429-rate_limit_exceeded",
    ),
    # OpenAI error-code guide: 503 "The engine is currently overloaded"
    pytest.param(
        503,
        oai("The engine is currently overloaded, please try again later.", "server_error", None),
        "chat",
        OVERLOADED,
        id="503-overloaded",
    ),
    # OpenAI error-code guide: 500
    pytest.param(
        500,
        oai(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        "chat",
        SERVER,
        id="500-server_error",
    ),
]


@pytest.fixture
async def oai_rig() -> AsyncIterator[Rig[OpenAIFake]]:
    async with openai_rig() as r:
        yield r


@pytest.fixture
async def ant_rig() -> AsyncIterator[Rig[AnthropicFake]]:
    async with anthropic_rig() as r:
        yield r


def check(error: SwitchboardError | None, expected: tuple[grpc.StatusCode, str]) -> None:
    assert error is not None
    assert (error.code, error.reason) == expected, error.message
    assert error.domain == "switchboard.dev"
    assert error.metadata["target"]
    assert error.request_id
    assert OPENAI_KEY not in error.message
    assert ANTHROPIC_KEY not in error.message
    if expected == QUOTA:
        assert [v.subject for v in error.violations] == [f"target:{error.metadata['target']}"]
        assert error.retry_after_s is None  # an operator must act; waiting does not help


@pytest.mark.parametrize(("status", "body", "agent", "expected"), OPENAI_BODIES)
async def test_openai_error_bodies_are_classified_by_meaning(
    oai_rig: Rig[OpenAIFake],
    status: int,
    body: dict[str, Any],
    agent: str,
    expected: tuple[grpc.StatusCode, str],
) -> None:
    whole = body if body.get("object") == "error" else {"error": body}
    scenario = openai_fake.Scenario(status=status, error_body=whole)
    oai_rig.fake.push(scenario, scenario)
    with pytest.raises(SwitchboardError) as caught:
        await oai_rig.client.invoke(agent, "hi")
    events, stream_error = await collect(oai_rig.client, agent, "hi")

    check(caught.value, expected)
    check(stream_error, expected)
    assert events == []


def ant(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message}


ANTHROPIC_BODIES = [
    # Issue 11 and github.com/anthropics/claude-code/issues/66314: out of credit is a 400
    pytest.param(
        400,
        ant(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. Please go to Plans & "
            "Billing to upgrade or purchase credits.",
        ),
        QUOTA,
        id="400-credit-balance",
    ),
    # docs.anthropic.com/en/api/errors: 402 billing_error
    pytest.param(
        402, ant("billing_error", "Your credit balance is too low"), QUOTA, id="402-billing"
    ),
    # github.com/earendil-works/pi/issues/102
    pytest.param(
        400,
        ant("invalid_request_error", "prompt is too long: 219898 tokens > 200000 maximum"),
        WINDOW,
        id="400-prompt-too-long",
    ),
    # github.com/docker/docker-agent/issues/569
    pytest.param(
        400,
        ant(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 178959 + 64000 > 200000, "
            "decrease input length or `max_tokens` and try again",
        ),
        WINDOW,
        id="400-exceed-context-limit",
    ),
    # github.com/cline/cline/issues/5
    pytest.param(
        400,
        ant("invalid_request_error", "Output blocked by content filtering policy"),
        POLICY,
        id="400-content-filtering",
    ),
    # github.com/ChatGPTNextWeb/NextChat/issues/4964: a plain bad request stays one
    pytest.param(
        400,
        ant(
            "invalid_request_error",
            "max_tokens: 10000 > 4096, which is the maximum allowed number of output tokens "
            "for claude-3-5-sonnet-20240620",
        ),
        INVALID,
        id="400-max_tokens",
    ),
    # docs.anthropic.com/en/api/errors
    pytest.param(
        401, ant("authentication_error", "invalid x-api-key"), AUTH, id="401-authentication"
    ),
    pytest.param(
        403,
        ant(
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        PERMISSION,
        id="403-permission",
    ),
    pytest.param(
        404, ant("not_found_error", "model: claude-3-opus-2024"), MODEL, id="404-not-found"
    ),
    pytest.param(
        413,
        ant("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        INVALID,
        id="413-request-too-large",
    ),
    # github.com/FoundationAgents/OpenManus/issues/746 (the message Anthropic sends)
    pytest.param(
        429,
        ant(
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 20,000 input "
            "tokens per minute. For details, refer to: "
            "https://docs.anthropic.com/en/api/rate-limits.",
        ),
        RATE,
        id="429-rate-limit",
    ),
    pytest.param(529, ant("overloaded_error", "Overloaded"), OVERLOADED, id="529-overloaded"),
    pytest.param(500, ant("api_error", "Internal server error"), SERVER, id="500-api-error"),
]


@pytest.mark.parametrize(("status", "error", "expected"), ANTHROPIC_BODIES)
async def test_anthropic_error_bodies_are_classified_by_meaning(
    ant_rig: Rig[AnthropicFake],
    status: int,
    error: dict[str, Any],
    expected: tuple[grpc.StatusCode, str],
) -> None:
    scenario = anthropic_fake.Scenario(status=status, error=error)
    ant_rig.fake.push(scenario, scenario)
    with pytest.raises(SwitchboardError) as caught:
        await ant_rig.client.invoke("chat", "hi")
    events, stream_error = await collect(ant_rig.client, "chat", "hi")

    check(caught.value, expected)
    check(stream_error, expected)
    assert events == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(ant("overloaded_error", "Overloaded"), OVERLOADED, id="overloaded"),
        pytest.param(
            ant("invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"),
            WINDOW,
            id="context-window",
        ),
        pytest.param(ant("billing_error", "Your credit balance is too low"), QUOTA, id="billing"),
    ],
)
async def test_anthropic_error_events_mid_stream_use_the_same_table(
    ant_rig: Rig[AnthropicFake], error: dict[str, Any], expected: tuple[grpc.StatusCode, str]
) -> None:
    ant_rig.fake.push(anthropic_fake.Scenario(error_after=4, stream_error=error))
    events, err = await collect(ant_rig.client, "chat", "hi")

    check(err, expected)
    assert kinds(events) == ["start", "text_delta"]


async def test_openai_error_objects_mid_stream_use_the_same_table(
    oai_rig: Rig[OpenAIFake],
) -> None:
    oai_rig.fake.push(
        openai_fake.Scenario(
            error_after=3,
            stream_error=oai(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ),
        )
    )
    events, err = await collect(oai_rig.client, "chat", "hi")

    check(err, QUOTA)
    assert "start" in kinds(events)
