"""Everything the contract rules out is INVALID_ARGUMENT with google.rpc.BadRequest naming the
field, through the real server (issue 11, section 5: the fuzzer's accepted inputs)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import timestamp_pb2
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import usage_pb2
from switchboard_client import AsyncClient, InvalidArgumentError, user

from service.config import ConfigError, load
from service.schemas import Schemas
from tests.harness import serve_config
from tests.provider_rigs import openai_rig

CONFIG = """
targets:
  m: {provider: mock, model: echo}
agents:
  echo:
    route: [m]
    overridable_parameters: [response_format]
    accepts_caller_tools: true
"""
ASSISTANT = pb.ROLE_ASSISTANT
TOOL = pb.ROLE_TOOL


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    async with serve_config(CONFIG) as served:
        yield served.client


def tool(name: str = "t1", parameters: dict[str, Any] | None = None) -> pb.Tool:
    out = pb.Tool(name=name)
    if parameters is not None:
        out.parameters.update(parameters)
    return out


def schema_format(schema: dict[str, Any], name: str = "reply") -> pb.Parameters:
    fmt = pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_SCHEMA, schema_name=name)
    fmt.json_schema.update(schema)
    return pb.Parameters(response_format=fmt)


def call(id_: str = "c1", name: str = "t1", arguments: str = "{}") -> pb.Message:
    return pb.Message(
        role=ASSISTANT, tool_calls=[pb.ToolCall(id=id_, name=name, arguments_json=arguments)]
    )


def answer(id_: str) -> pb.Message:
    return pb.Message(role=TOOL, tool_call_id=id_, content=[pb.ContentPart(text="42")])


def image(**source: Any) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(image=pb.Image(**source))])


CASES: list[tuple[str, list[pb.Message], dict[str, Any], str]] = [
    ("tool name with a final newline", [user("hi")], {"tools": [tool("t1\n")]}, "tools[0].name"),
    ("arguments_json a list", [user("hi"), call(arguments="[1]")], {},
     "messages[1].tool_calls[0].arguments_json"),
    ("arguments_json not JSON", [user("hi"), call(arguments="{nope")], {},
     "messages[1].tool_calls[0].arguments_json"),
    ("a tool result answering no call", [user("hi"), call("c1"), answer("c2")], {},
     "messages[2].tool_call_id"),
    ("a tool result before its call", [user("hi"), answer("c1"), call("c1")], {},
     "messages[1].tool_call_id"),
    ("a tool call with empty id", [user("hi"), call(id_="")], {},
     "messages[1].tool_calls[0].id"),
    ("a tool call with empty name", [user("hi"), call(name="")], {},
     "messages[1].tool_calls[0].name"),
    ("file URL", [image(url="file:///etc/passwd")], {}, "messages[0].content[0].image.url"),
    ("empty URL", [image(url="")], {}, "messages[0].content[0].image.url"),
    ("cloud metadata", [image(url="http://169.254.169.254/latest/meta-data/")], {},
     "messages[0].content[0].image.url"),
    ("metadata as a decimal", [image(url="http://2852039166/")], {},
     "messages[0].content[0].image.url"),
    ("loopback", [image(url="http://127.0.0.1:6379/")], {}, "messages[0].content[0].image.url"),
    ("localhost", [image(url="https://localhost/x.png")], {}, "messages[0].content[0].image.url"),
    ("private", [image(url="http://10.1.2.3/x.png")], {}, "messages[0].content[0].image.url"),
    ("IPv6 mapped", [image(url="http://[::ffff:169.254.169.254]/")], {},
     "messages[0].content[0].image.url"),
    ("data URL not an image", [image(url="data:text/html,<b>")], {},
     "messages[0].content[0].image.url"),
    ("inline data that is not an image", [image(data=b"<b>", media_type="text/html")], {},
     "messages[0].content[0].image.media_type"),
    ("empty image data", [image(data=b"", media_type="image/png")], {},
     "messages[0].content[0].image.data"),
    ("tool schema not a schema", [user("hi")], {"tools": [tool(parameters={"type": "banana"})]},
     "tools[0].parameters"),
    ("tool schema not an object", [user("hi")], {"tools": [tool(parameters={"type": "string"})]},
     "tools[0].parameters"),
    ("response schema not a schema", [user("hi")],
     {"parameters": schema_format({"type": "object", "properties": {"a": {"minLength": -1}}})},
     "parameters.response_format.json_schema"),
    ("schema name with a newline", [user("hi")],
     {"parameters": schema_format({"type": "object"}, name="reply\n")},
     "parameters.response_format.schema_name"),
    ("NaN in a tool schema", [user("hi")], {"tools": [tool(parameters={"x": math.nan})]},
     "tools[0].parameters.x"),
    ("Infinity deep in a response schema", [user("hi")],
     {"parameters": schema_format({"type": "object", "maximum": [1, -math.inf]})},
     "parameters.response_format.json_schema.maximum[1]"),
    ("a tool schema over 64 KiB", [user("hi")],
     {"tools": [tool(parameters={"type": "object", "description": "d" * 70_000})]},
     "tools[0].parameters"),
    ("schemas over 256 KiB in all", [user("hi")],
     {"tools": [tool(f"t{i}", {"type": "object", "description": "d" * 60_000}) for i in range(5)]},
     "tools"),
    ("more messages than the server takes", [user("hi")] * 1001, {}, "messages"),
    ("64 KB metadata key", [user("hi")], {"metadata": {"k" * 65536: "v"}}, "metadata"),
    ("64 KB metadata value", [user("hi")], {"metadata": {"k": "v" * 65536}}, "metadata[k]"),
    ("session id with a control character", [user("hi")], {"session_id": "a\x00b"},
     "session_id"),
    ("session id with a newline", [user("hi")], {"session_id": "a\nb"}, "session_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("conversation", "kwargs", "field"),
    [pytest.param(c, k, f, id=name) for name, c, k, f in CASES],
)
async def test_the_contract_rules_it_out(
    client: AsyncClient, conversation: list[pb.Message], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as invoked:
        await client.invoke("echo", conversation, **kwargs)
    assert field in [v.subject for v in invoked.value.violations], invoked.value
    with pytest.raises(InvalidArgumentError) as streamed:
        async for _ in client.stream("echo", conversation, **kwargs):
            pass
    assert field in [v.subject for v in streamed.value.violations]


async def test_what_the_contract_allows_still_passes(client: AsyncClient) -> None:
    conversation = [
        user("hi"),
        call("c1", arguments=""),  # no arguments: the providers send "{}"
        answer("c1"),
        image(url="https://example.com/cat.png"),
        image(url="data:image/png;base64,iVBORw=="),
        image(data=b"\x89PNG", media_type="image/png"),
    ]
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 5}}}
    response = await client.invoke(
        "echo",
        conversation,
        tools=[tool(parameters=schema)],
        parameters=schema_format(schema),
        metadata={"k" * 64: "v" * 512},
        session_id="user-42:thread/7",
    )
    assert response.finish_reason == pb.FINISH_REASON_STOP


async def test_session_ids_with_control_characters_on_the_session_service() -> None:
    async with serve_config(CONFIG) as served:
        for bad in ("a\x00b", "line\nbreak", "\x1b[31mred"):
            with pytest.raises(InvalidArgumentError) as info:
                await served.client.get_session(bad)
            assert [v.subject for v in info.value.violations] == ["id"]
            with pytest.raises(InvalidArgumentError):
                await served.client.delete_session(bad)


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        pytest.param(usage_pb2.GetUsageRequest(start_time=_ts(0, -1)), "start_time", id="nanos -1"),
        pytest.param(
            usage_pb2.GetUsageRequest(start_time=_ts(0, 1_000_000_000)),
            "start_time",
            id="nanos 1e9",
        ),
        pytest.param(
            usage_pb2.GetUsageRequest(end_time=_ts(253_402_300_800)), "end_time", id="year 10000"
        ),
        pytest.param(
            usage_pb2.GetUsageRequest(start_time=_ts(-62_135_596_801)), "start_time", id="year 0"
        ),
    ],
)
async def test_out_of_range_timestamps_are_invalid_argument(
    client: AsyncClient, request_: usage_pb2.GetUsageRequest, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.get_usage(request_)
    assert [v.subject for v in info.value.violations] == [field]


async def test_integral_numbers_in_a_callers_schema_go_upstream_as_integers() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 500}, "minItems": 2},
            "score": {"type": "number", "minimum": 0.5, "maximum": 1e300},
        },
    }
    caller_tool = tool("lookup", schema)
    async with openai_rig() as rig:
        await rig.client.invoke("chat", "hi", tools=[caller_tool], parameters=schema_format(schema))
        body = rig.fake.received[-1].body
    sent = body["tools"][1]["function"]["parameters"]
    assert sent == schema
    tags = sent["properties"]["tags"]
    assert type(tags["minItems"]) is int
    assert type(tags["items"]["maxLength"]) is int
    assert type(sent["properties"]["score"]["minimum"]) is float
    # Past 2**53 a double is not an exact integer: it stays a number as sent.
    assert type(sent["properties"]["score"]["maximum"]) is float
    fmt = body["response_format"]["json_schema"]["schema"]
    assert type(fmt["properties"]["tags"]["minItems"]) is int


def test_a_schema_is_checked_once_and_remembered() -> None:
    schemas = Schemas(remember=2)
    good = {"type": "object", "properties": {"a": {"type": "string"}}}
    bad = {"type": "banana"}
    assert schemas.unchecked([good, bad])
    assert schemas.problem(good) is None
    assert schemas.problem(bad) == (
        "not a JSON schema: 'banana' is not valid under any of the given schemas (at /type)"
    )
    assert not schemas.unchecked([good, bad])
    assert not schemas.unchecked([dict(reversed(good.items()))])  # the same schema
    schemas.problem({"type": "string"})  # a third: the least recently used is forgotten
    assert schemas.unchecked([good])
    assert not schemas.unchecked([bad])


def test_an_agents_own_schemas_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    """The same rule as for a caller's: a config tool's schema must be a JSON schema of type
    object, a configured response format's a JSON schema."""
    bad_tool = CONFIG + (
        "    tools:\n"
        "      - {name: t, parameters: {type: object, properties: {x: {type: banana}}}}\n"
    )
    path = tmp_path / "tool.yaml"
    path.write_text(bad_tool)
    with pytest.raises(ConfigError, match=r"agents\.echo\.tools\.0\.parameters") as info:
        load(path, {})
    assert "not a JSON schema" in str(info.value)
    bad_format = CONFIG + (
        "    parameters:\n"
        "      response_format: {type: json_schema, schema_name: r, json_schema: {minLength: -1}}\n"
    )
    path.write_text(bad_format)
    with pytest.raises(ConfigError, match=r"json_schema"):
        load(path, {})
