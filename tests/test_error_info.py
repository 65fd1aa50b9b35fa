"""Every error status carries google.rpc.ErrorInfo (reason, domain, metadata) and the call's
request id, as ErrorInfo metadata and as the ``x-request-id`` trailer, including refusals by
the interceptors (auth, rate limits); two credentials in one call are refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc
from switchboard_client import (
    AsyncClient,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)

from service.api.errors import MAX_INFO_VALUE_CHARS, to_status
from service.errors import Reason
from service.observability.logging import JsonFormatter
from tests.chain_helpers import auth_config, make_keys
from tests.harness import Served, serve_config

HI = pb.InvokeRequest(
    agent="echo", messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hi")])]
)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert info.domain == "switchboard.dev"
    return info


def trailer(error: grpc.aio.AioRpcError, name: str) -> list[str]:
    return [str(v) for k, v in error.trailing_metadata() or () if k == name]


async def test_an_error_names_its_reason_agent_and_request_id(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.invoke("nope", "hi", request_id="req-quote-me-1")

    assert caught.value.reason == "AGENT_NOT_FOUND"
    assert caught.value.domain == "switchboard.dev"
    assert caught.value.metadata["agent"] == "nope"
    assert caught.value.request_id == "req-quote-me-1"

    with pytest.raises(NotFoundError) as streamed:
        async for _ in client.stream("nope", "hi", request_id="req-quote-me-2"):
            pass
    assert (streamed.value.reason, streamed.value.request_id) == (
        "AGENT_NOT_FOUND",
        "req-quote-me-2",
    )


async def test_the_request_id_is_a_trailer_and_in_error_info(served: Served) -> None:
    stub = pb_grpc.AgentServiceStub(served.channel)
    bad = pb.InvokeRequest(agent="nope", messages=HI.messages)

    # The caller's header.
    with pytest.raises(grpc.aio.AioRpcError) as given:
        await stub.Invoke(bad, metadata=[("x-request-id", "hdr-123")])
    assert trailer(given.value, "x-request-id") == ["hdr-123"]
    assert error_info(given.value).metadata["request_id"] == "hdr-123"

    # None given: the one the server made, the same in both places.
    with pytest.raises(grpc.aio.AioRpcError) as made:
        await stub.Invoke(bad)
    [request_id] = trailer(made.value, "x-request-id")
    assert len(request_id) >= 16
    assert error_info(made.value).metadata["request_id"] == request_id

    # A stream's error too.
    call = stub.Stream(pb.StreamRequest(agent="nope", messages=HI.messages))
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in call:
            pass
    assert trailer(streamed.value, "x-request-id")
    assert error_info(streamed.value).reason == "AGENT_NOT_FOUND"


async def test_metadata_values_are_cut_short(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.invoke("a" * 300, "hi")
    assert len(caught.value.metadata["agent"]) == MAX_INFO_VALUE_CHARS


async def test_invalid_arguments_carry_error_info_too(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.invoke("echo", [], request_id="req-bad-1")
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert caught.value.request_id == "req-bad-1"
    assert caught.value.metadata["agent"] == "echo"


async def test_auth_refusals_in_the_interceptor_carry_error_info_and_the_request_id(
    tmp_path: Path,
) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path)) as served:
        stub = pb_grpc.AgentServiceStub(served.channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Invoke(HI, metadata=[("x-request-id", "auth-1")])
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert trailer(missing.value, "x-request-id") == ["auth-1"]
        info = error_info(missing.value)
        assert (info.reason, info.metadata["request_id"]) == ("CREDENTIALS_MISSING", "auth-1")

        call = stub.Stream(
            pb.StreamRequest(agent="echo", messages=HI.messages),
            metadata=[("x-request-id", "auth-2"), ("authorization", "Bearer sb_x_y")],
        )
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            async for _ in call:
                pass
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert trailer(wrong.value, "x-request-id") == ["auth-2"]
        assert error_info(wrong.value).reason == "CREDENTIALS_INVALID"

        good = AsyncClient(served.address, channel=served.channel, api_key=keys[0])
        assert (await good.invoke("echo", "hi")).agent == "echo"


async def test_rate_limit_refusals_carry_error_info_and_the_request_id(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    limits = "rate_limits:\n  tenant: {requests_per_min: 1}\n"
    async with serve_config(auth_config(path, limits), api_key=keys[0]) as served:
        await served.client.invoke("echo", "one")
        with pytest.raises(ResourceExhaustedError) as caught:
            await served.client.invoke("echo", "two", request_id="limited-1")
        assert caught.value.reason == "RATE_LIMITED"
        assert caught.value.request_id == "limited-1"
        assert caught.value.retry_after_s is not None


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda good: [("authorization", "Bearer A"), ("x-api-key", "B")], id="A+B"),
        pytest.param(
            lambda good: [("x-api-key", good), ("authorization", "Bearer garbage")],
            id="good-x-api-key+garbage-bearer",
        ),
        pytest.param(
            lambda good: [("authorization", "Bearer garbage"), ("x-api-key", good)],
            id="garbage-bearer+good-x-api-key",
        ),
        pytest.param(
            lambda good: [("authorization", f"Bearer {good}"), ("x-api-key", good)],
            id="the-same-key-twice",
        ),
        pytest.param(lambda good: [("x-api-key", good), ("x-api-key", good)], id="x-api-key-twice"),
    ],
)
async def test_two_credentials_in_one_call_are_refused(tmp_path: Path, headers: object) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path)) as served:
        stub = pb_grpc.AgentServiceStub(served.channel)
        metadata = headers(keys[0])  # type: ignore[operator]
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Invoke(HI, metadata=metadata)
        call = stub.Stream(pb.StreamRequest(agent="echo", messages=HI.messages), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            async for _ in call:
                pass
        for error in (unary.value, streamed.value):
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "send one credential" in (error.details() or "")
            assert keys[0] not in (error.details() or "")
            assert error_info(error).reason == "CREDENTIALS_AMBIGUOUS"


async def test_one_credential_still_works(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path)) as served:
        stub = pb_grpc.AgentServiceStub(served.channel)
        for metadata in ([("x-api-key", keys[0])], [("authorization", f"Bearer {keys[0]}")]):
            assert (await stub.Invoke(HI, metadata=metadata)).agent == "echo"


def test_an_unexpected_exception_is_internal_with_error_info() -> None:
    status = to_status(ValueError("a secret detail"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error"
    [details] = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    decoded = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    decoded.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("INTERNAL", "switchboard.dev")


async def test_the_call_log_line_has_the_reason_and_the_failing_target(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = """
    targets:
      down: {provider: mock, model: echo, mock: {fail_rate: 1, error: resource_exhausted}}
    agents:
      a: {route: [down]}
    """
    caplog.set_level(logging.INFO)
    async with serve_config(config) as served:
        with pytest.raises(ResourceExhaustedError):
            await served.client.invoke("a", "hi", request_id="logged-1")
        with pytest.raises(NotFoundError):
            await served.client.invoke("nope", "hi", request_id="logged-2")
    formatter = JsonFormatter()
    calls = {
        line["request_id"]: line
        for line in (json.loads(formatter.format(r)) for r in caplog.records)
        if line.get("event") == "call"
    }
    assert calls["logged-1"]["reason"] == "UPSTREAM_QUOTA_EXHAUSTED"
    assert calls["logged-1"]["target"] == "down"
    assert calls["logged-2"]["reason"] == "AGENT_NOT_FOUND"


def test_every_reason_is_in_the_documented_error_tables() -> None:
    docs = Path(__file__).parent.parent / "docs"
    readme = (docs / "contract.md").read_text() + (docs / "providers.md").read_text()
    missing = [r.value for r in Reason if f"`{r.value}`" not in readme]
    assert missing == [], (
        f"add these reasons to the error tables in docs/contract.md or docs/providers.md: {missing}"
    )
