"""Schemas as JSON text (``Tool.parameters_json``, ``ResponseFormat.json_schema_json``): for
callers whose protobuf runtime turns a plain object set as a Struct into ``{}`` (JavaScript),
so no language loses a schema silently. Same checks, same upstream body as a Struct."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import AsyncClient, InvalidArgumentError, user

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
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 80}},
    "required": ["city"],
}


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    async with serve_config(CONFIG) as served:
        yield served.client


def json_format(text: str) -> pb.Parameters:
    return pb.Parameters(
        response_format=pb.ResponseFormat(
            type=pb.ResponseFormat.TYPE_JSON_SCHEMA, schema_name="reply", json_schema_json=text
        )
    )


async def test_json_text_schemas_go_upstream_as_a_structs_would() -> None:
    text = json.dumps(SCHEMA)
    async with openai_rig() as rig:
        await rig.client.invoke(
            "chat",
            "hi",
            tools=[pb.Tool(name="weather", parameters_json=text)],
            parameters=json_format(text),
        )
        body = rig.fake.received[-1].body
    sent = body["tools"][-1]["function"]
    assert sent["name"] == "weather"
    assert sent["parameters"] == SCHEMA
    assert type(sent["parameters"]["properties"]["city"]["maxLength"]) is int
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA


def both() -> pb.Tool:
    tool = pb.Tool(name="t1", parameters_json=json.dumps(SCHEMA))
    tool.parameters.update(SCHEMA)
    return tool


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("both forms", {"tools": [both()]}, "tools[0].parameters_json"),
    ("not JSON", {"tools": [pb.Tool(name="t1", parameters_json="{nope")]},
     "tools[0].parameters_json"),
    ("a list", {"tools": [pb.Tool(name="t1", parameters_json="[1]")]},
     "tools[0].parameters_json"),
    ("NaN", {"tools": [pb.Tool(name="t1", parameters_json='{"maximum": NaN}')]},
     "tools[0].parameters_json"),
    ("not a schema", {"tools": [pb.Tool(name="t1", parameters_json='{"type": "banana"}')]},
     "tools[0].parameters"),
    ("response schema not JSON", {"parameters": json_format("{")},
     "parameters.response_format.json_schema_json"),
    # The size limits hold for the JSON text form too (checked before it is parsed).
    ("a 65 KiB schema as text", {"tools": [pb.Tool(name="t1", parameters_json=json.dumps(
        {"type": "object", "description": "x" * 66_000}))]}, "tools[0].parameters_json"),
    ("a 65 KiB response schema as text", {"parameters": json_format(json.dumps(
        {"type": "object", "description": "x" * 66_000}))},
     "parameters.response_format.json_schema_json"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "field"), [pytest.param(k, f, id=n) for n, k, f in CASES])
async def test_bad_json_text_schemas_are_invalid_argument(
    client: AsyncClient, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.invoke("echo", [user("hi")], **kwargs)
    assert [v.subject for v in info.value.violations] == [field]
