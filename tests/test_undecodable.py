"""Bodies that do not decode: INVALID_ARGUMENT before auth on every method, counted in the
metrics and the call log, and no traceback in the log (issue 11, section 5)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor
from switchboard.v1 import agent_pb2, session_pb2, usage_pb2

from service.observability.logging import CALLS_LOGGER
from tests.chain_helpers import auth_config, make_keys, sample, scrape
from tests.harness import serve_config

SERVICES = [
    agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
    session_pb2.DESCRIPTOR.services_by_name["SessionService"],
    usage_pb2.DESCRIPTOR.services_by_name["UsageService"],
]
METHODS = [m for s in SERVICES for m in s.methods]


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _len(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def nested_struct(depth: int) -> bytes:
    """A google.protobuf.Struct ``{"a": {"a": ... {}}}`` nested ``depth`` levels, as bytes
    (the Python runtime refuses to build it, so it is encoded by hand)."""
    struct = b""
    for _ in range(depth):
        struct = _len(1, _len(1, b"a") + _len(2, _len(5, struct)))  # fields{a: struct_value}
    return struct


def bodies(method: descriptor.MethodDescriptor) -> dict[str, bytes]:
    """Every kind of undecodable body the fuzzer found, shaped for ``method``'s request."""
    out = {
        "0x0a (a length-delimited tag and nothing else)": b"\x0a",
        "0xff": b"\xff",
        "truncated varint": b"\x08\xff",
        "wire type 6": b"\x0e",
        "wire type 7": b"\x0f",
        "length past the end": b"\x0a\x05ab",
    }
    strings = [
        f for f in method.input_type.fields if f.type == descriptor.FieldDescriptor.TYPE_STRING
    ]
    if strings:
        out["bad UTF-8 in a string"] = _len(strings[0].number, b"\xff\xfe")
    if "tools" in method.input_type.fields_by_name:
        tool = _len(1, b"t") + _len(3, nested_struct(49))
        out["tool schema nested 49 deep"] = _len(1, b"assistant") + _len(7, tool)
    return out


CASES = [
    pytest.param(m, name, body, id=f"{m.name}-{name}")
    for m in METHODS
    for name, body in bodies(m).items()
]


async def _call(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, body: bytes
) -> grpc.aio.AioRpcError:
    path = f"/{method.containing_service.full_name}/{method.name}"
    # Identity serializers: the bytes go on the wire as they are.
    try:
        if method.server_streaming:
            async for _ in channel.unary_stream(path)(body, timeout=30):
                pass
        else:
            await channel.unary_unary(path)(body, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError(f"{method.name} accepted {body!r}")


async def test_every_undecodable_body_is_invalid_argument_before_auth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    keys_file, _, _ = make_keys(tmp_path, [("acme", ("*",))])
    config = auth_config(keys_file, "observability: {metrics: {port: 0}}")
    async with serve_config(config) as served:
        for param in CASES:
            method, name, body = param.values
            error = await _call(served.channel, method, body)  # no credentials sent
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method.name, name)
            details = error.details() or ""
            assert details.startswith(
                f"the request body is not a valid {method.input_type.full_name}"
            ), details
            assert len(details) < 200
        text = await scrape(served.app.metrics_port or 0)

    for method in METHODS:
        counted = sample(
            text, "switchboard_calls_total", rpc_method=method.name, code="INVALID_ARGUMENT"
        )
        assert counted == len(bodies(method)), method.name
    calls = [r for r in caplog.records if r.name == CALLS_LOGGER]
    refused = [r for r in calls if getattr(r, "code", "") == "INVALID_ARGUMENT"]
    assert len(refused) == len(CASES)
    # Not one traceback (grpc's "Unexpected <class 'DecodeError'>" or ours).
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not [r for r in caplog.records if "Unexpected" in r.getMessage()]


async def test_the_deep_schema_line_is_in_the_message() -> None:
    method = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].methods_by_name["Invoke"]
    body = bodies(method)["tool schema nested 49 deep"]
    async with serve_config(
        "targets: {m: {provider: mock, model: echo}}\nagents: {assistant: {route: [m]}}\n"
    ) as served:
        error = await _call(served.channel, method, body)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "nested too deeply" in (error.details() or "")
        # A schema nested within the limit still decodes, and the call goes on.
        fine = _len(1, b"nope") + _len(7, _len(1, b"t") + _len(3, nested_struct(10)))
        error = await _call(served.channel, method, fine)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        json.dumps(error.details())
