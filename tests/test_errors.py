"""Every bad input gets a clear status and message naming what is wrong; never UNKNOWN."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc
from switchboard_client import (
    AsyncClient,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    SwitchboardError,
    user,
)
from switchboard_client.errors import from_rpc_error

from service import errors
from service.api.errors import to_status
from service.config import ConfigError, load
from tests.harness import Served, serve_config


async def test_unknown_agent_is_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError, match="no agent named 'nope'"):
        await client.invoke("nope", "hi")
    with pytest.raises(NotFoundError, match="no agent named 'nope'"):
        async for _ in client.stream("nope", "hi"):
            pass
    with pytest.raises(NotFoundError, match="no agent named 'nope'"):
        await client.get_agent("nope")


@pytest.mark.parametrize(
    ("agent", "conversation", "kwargs", "field"),
    [
        ("", "hi", {}, "agent"),
        ("echo", [], {}, "messages"),
        ("echo", [pb.Message(content=[pb.ContentPart(text="x")])], {}, "messages[0].role"),
        (
            "echo",
            [pb.Message(role=pb.Role.ValueType(42), content=[pb.ContentPart(text="x")])],
            {},
            "messages[0].role",
        ),
        ("echo", [pb.Message(role=pb.ROLE_USER)], {}, "messages[0].content"),
        (
            "echo",
            [pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart()])],
            {},
            "messages[0].content[0]",
        ),
        (
            "echo",
            [pb.Message(role=pb.ROLE_TOOL, content=[pb.ContentPart(text="42")])],
            {},
            "messages[0].tool_call_id",
        ),
        ("echo", "hi", {"parameters": pb.Parameters(top_p=0.5)}, "parameters.top_p"),
        ("echo", "hi", {"parameters": pb.Parameters(temperature=3.5)}, "parameters.temperature"),
        ("echo", "hi", {"parameters": pb.Parameters(max_tokens=0)}, "parameters.max_tokens"),
        (
            "echo",
            "hi",
            {"parameters": pb.Parameters(stop=["a", "b", "c", "d", "e"])},
            "parameters.stop",
        ),
        ("echo", "hi", {"tools": [pb.Tool(name="t")]}, "tools"),
        ("assistant", "hi", {"tools": [pb.Tool(name="get_weather")]}, "tools[0].name"),
        ("assistant", "hi", {"tools": [pb.Tool(name="bad name!")]}, "tools[0].name"),
        (
            "assistant",
            "hi",
            {
                "parameters": pb.Parameters(
                    response_format=pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_SCHEMA)
                )
            },
            "parameters.response_format.json_schema",
        ),
        ("echo", "hi", {"request_id": "r" * 129}, "request_id"),
        ("echo", "hi", {"metadata": {f"k{i}": "v" for i in range(33)}}, "metadata"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    client: AsyncClient, agent: str, conversation: object, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.invoke(agent, conversation, **kwargs)  # type: ignore[arg-type]

    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.message.startswith(f"{field}:")
    assert field in [v.subject for v in raised.value.violations]


async def test_stream_reports_the_same_invalid_argument(client: AsyncClient) -> None:
    with pytest.raises(InvalidArgumentError, match=r"parameters\.top_p: agent 'echo' does not"):
        async for _ in client.stream("echo", "hi", parameters=pb.Parameters(top_p=0.5)):
            pass


async def test_every_violation_is_listed(client: AsyncClient) -> None:
    bad = pb.Parameters(top_p=0.5, temperature=9)
    with pytest.raises(InvalidArgumentError, match=r"\(and 2 more\)") as raised:
        await client.invoke("echo", [pb.Message(role=pb.ROLE_USER)], parameters=bad)
    assert {v.subject for v in raised.value.violations} == {
        "messages[0].content",
        "parameters.top_p",
        "parameters.temperature",
    }


async def test_too_many_messages_names_the_limit() -> None:
    config = """
        server: {max_messages: 3}
        targets: {m: {provider: mock, model: echo}}
        agents: {a: {route: [m]}}
    """
    async with serve_config(config) as s:
        with pytest.raises(InvalidArgumentError, match="4 messages is over the limit of 3"):
            await s.client.invoke("a", [user(str(i)) for i in range(4)])


async def test_oversized_request_is_resource_exhausted_with_the_limit() -> None:
    config = """
        server: {max_receive_message_bytes: 4096}
        targets: {m: {provider: mock, model: echo}}
        agents: {a: {route: [m]}}
    """
    async with serve_config(config) as s:
        with pytest.raises(ResourceExhaustedError, match="4096"):
            await s.client.invoke("a", "x" * 10_000)
        # A request under the limit is still served on the same server.
        response = await s.client.invoke("a", "small")
        assert response.message.content[0].text == "small"


async def test_bad_page_token_and_negative_page_size(served: Served) -> None:
    stub = agent_pb2_grpc.AgentServiceStub(served.channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAgents(pb.ListAgentsRequest(page_token="%%%"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # base64, but not one of ours
        await stub.ListAgents(pb.ListAgentsRequest(page_token="YWJj"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListAgents(pb.ListAgentsRequest(page_size=-1))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetAgent(pb.GetAgentRequest())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unexpected_exceptions_are_internal_with_a_generic_message() -> None:
    status = to_status(RuntimeError("db password is hunter2"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error"


def test_every_error_kind_maps_to_its_own_code() -> None:
    kinds = {
        errors.InvalidArgument("x"): grpc.StatusCode.INVALID_ARGUMENT,
        errors.NotFound("x"): grpc.StatusCode.NOT_FOUND,
        errors.FailedPrecondition("x"): grpc.StatusCode.FAILED_PRECONDITION,
        errors.Unauthenticated("x"): grpc.StatusCode.UNAUTHENTICATED,
        errors.PermissionDenied("x"): grpc.StatusCode.PERMISSION_DENIED,
        errors.ResourceExhausted("x"): grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.DeadlineExceeded("x"): grpc.StatusCode.DEADLINE_EXCEEDED,
        errors.Unavailable("x"): grpc.StatusCode.UNAVAILABLE,
        errors.Internal("x"): grpc.StatusCode.INTERNAL,
    }
    for error, code in kinds.items():
        assert to_status(error).code == code


async def test_retry_info_and_quota_failure_reach_the_client() -> None:
    status = to_status(
        errors.ResourceExhausted(
            "requests per minute exhausted",
            retry_after_s=1.25,
            violations=[errors.QuotaViolation("tenant:acme", "requests per minute")],
        )
    )
    server = grpc.aio.server()

    async def handler(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(status.code, status.details, status.trailing_metadata)
        raise AssertionError

    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "t.T", {"M": grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary("/t.T/M")(b"")
        error = from_rpc_error(raised.value)
        assert isinstance(error, SwitchboardError)
        assert error.retry_after_s == pytest.approx(1.25)
        assert [(v.subject, v.description) for v in error.violations] == [
            ("tenant:acme", "requests per minute")
        ]
    finally:
        await server.stop(None)


def test_a_malformed_env_override_names_the_variable_not_its_value(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.yaml"
    path.write_text("targets: {m: {provider: mock, model: echo}}\nagents: {a: {route: [m]}}\n")
    secret = "redis://:hunter2-secret@cache:6379/0"
    with pytest.raises(ConfigError) as raised:
        load(path, {"SWITCHBOARD_STATE__REDIS_URL": f'"{secret}'})  # an unclosed quote
    assert "SWITCHBOARD_STATE__REDIS_URL" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    assert raised.value.__cause__ is None
