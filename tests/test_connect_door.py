"""The Connect door (and gRPC-Web) on the HTTP listener: curl with JSON, server streaming,
errors with the gRPC door's details, and the same chain (auth, tenancy, metrics)."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import struct
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from google.rpc import error_details_pb2
from prometheus_client import generate_latest
from switchboard.v1 import agent_pb2 as pb

from tests.chain_helpers import make_keys, sample
from tests.harness import serve_config

CONFIG = """
server:
  http: {port: 0}
targets:
  mock-echo: {provider: mock, model: echo}
agents:
  echo: {route: [mock-echo]}
"""
INVOKE = "/switchboard.v1.AgentService/Invoke"
STREAM = "/switchboard.v1.AgentService/Stream"
HELLO = {"agent": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hello there"}]}]}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def envelopes(body: bytes) -> list[tuple[int, bytes]]:
    """Connect/gRPC-Web frames: (flags, payload)."""
    frames, at = [], 0
    while at < len(body):
        flags, size = struct.unpack(">BI", body[at : at + 5])
        frames.append((flags, body[at + 5 : at + 5 + size]))
        at += 5 + size
    return frames


def envelope(payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(payload)) + payload


def error_info(error: dict[str, Any]) -> error_details_pb2.ErrorInfo:
    for detail in error.get("details", []):
        if detail["type"] == "google.rpc.ErrorInfo":
            value = detail["value"]
            return error_details_pb2.ErrorInfo.FromString(
                base64.b64decode(value + "=" * (-len(value) % 4))
            )
    raise AssertionError(f"no ErrorInfo in {error}")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_json_invoke_as_the_issue_shows() -> None:
    async with serve_config(CONFIG, http=True) as served:
        done = await asyncio.to_thread(
            subprocess.run,
            [
                "curl",
                "-sS",
                "--max-time",
                "30",
                "-H",
                "content-type: application/json",
                "-d",
                json.dumps(HELLO),
                served.http_url + INVOKE,
            ],
            capture_output=True,
            check=True,
        )
    answer = json.loads(done.stdout)
    assert answer["message"]["content"] == [{"text": "hello there"}]
    assert answer["finishReason"] == "FINISH_REASON_STOP"
    assert answer["agent"] == "echo"


async def test_server_streaming_over_connect_json_and_binary() -> None:
    async with serve_config(CONFIG, http=True) as served:
        status, headers, body = await asyncio.to_thread(
            post,
            served.http_url + STREAM,
            envelope(json.dumps(HELLO).encode()),
            {"content-type": "application/connect+json"},
        )
        request = pb.StreamRequest(agent="echo")
        request.messages.add(role=pb.ROLE_USER).content.add(text="binary too")
        _, _, binary = await asyncio.to_thread(
            post,
            served.http_url + STREAM,
            envelope(request.SerializeToString()),
            {"content-type": "application/connect+proto"},
        )
    assert status == 200
    assert headers["content-type"] == "application/connect+json"
    frames = envelopes(body)
    assert frames[-1][0] == 2  # end of stream, no error
    assert "error" not in json.loads(frames[-1][1])
    events = [json.loads(payload) for flags, payload in frames[:-1]]
    assert [next(iter(e)) for e in events] == ["start", "textDelta", "textDelta", "usage", "finish"]
    assert "".join(e["textDelta"]["text"] for e in events if "textDelta" in e) == "hello there"
    texts = [
        pb.StreamResponse.FromString(payload).text_delta.text
        for flags, payload in envelopes(binary)[:-1]
    ]
    assert "".join(texts) == "binary too"


async def test_errors_carry_the_grpc_doors_code_and_details() -> None:
    async with serve_config(CONFIG, http=True) as served:
        status, _, body = await asyncio.to_thread(
            post,
            served.http_url + INVOKE,
            json.dumps({**HELLO, "agent": "nope"}).encode(),
            {"content-type": "application/json"},
        )
        bad_status, _, bad = await asyncio.to_thread(
            post,
            served.http_url + INVOKE,
            json.dumps({"agent": "echo", "messages": [{"content": [{"text": "x"}]}]}).encode(),
            {"content-type": "application/json"},
        )
        _, _, streamed = await asyncio.to_thread(
            post,
            served.http_url + STREAM,
            envelope(json.dumps({**HELLO, "agent": "nope"}).encode()),
            {"content-type": "application/connect+json"},
        )
    assert status == 404
    error = json.loads(body)
    assert error["code"] == "not_found"
    info = error_info(error)
    assert info.reason == "AGENT_NOT_FOUND"
    assert info.domain == "switchboard.dev"
    assert info.metadata["request_id"]
    assert bad_status == 400
    assert json.loads(bad)["code"] == "invalid_argument"
    assert "messages[0].role" in json.loads(bad)["message"]
    # A stream's error is its end-of-stream message.
    (flags, payload), *_ = envelopes(streamed)
    assert flags == 2
    assert json.loads(payload)["error"]["code"] == "not_found"


AUTH = """
server:
  http: {{port: 0}}
auth: {{enabled: true, keys_file: {keys}}}
targets:
  mock-echo: {{provider: mock, model: echo}}
agents:
  echo: {{route: [mock-echo]}}
"""


async def test_keys_and_metrics_are_the_chains(tmp_path: Path) -> None:
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("echo",))])
    async with serve_config(AUTH.format(keys=keys_file), http=True) as served:
        url, body = served.http_url + INVOKE, json.dumps(HELLO).encode()
        anonymous = await asyncio.to_thread(post, url, body, {"content-type": "application/json"})
        keyed = await asyncio.to_thread(
            post,
            url,
            body,
            {"content-type": "application/json", "authorization": f"Bearer {keys[0]}"},
        )
        exposition = generate_latest(served.app.metrics.registry).decode()
    assert anonymous[0] == 401
    assert error_info(json.loads(anonymous[2])).reason == "CREDENTIALS_MISSING"
    assert keyed[0] == 200
    assert json.loads(keyed[2])["message"]["content"] == [{"text": "hello there"}]
    calls = "switchboard_calls_total"
    assert sample(exposition, calls, rpc_method="Invoke", tenant="acme", code="OK") == 1
    assert sample(exposition, calls, rpc_method="Invoke", code="UNAUTHENTICATED") == 1


async def test_grpc_web_unary() -> None:
    request = pb.InvokeRequest(agent="echo")
    request.messages.add(role=pb.ROLE_USER).content.add(text="from a browser")
    async with serve_config(CONFIG, http=True) as served:
        status, headers, body = await asyncio.to_thread(
            post,
            served.http_url + INVOKE,
            envelope(request.SerializeToString()),
            {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
    assert status == 200
    assert headers["content-type"].startswith("application/grpc-web")
    (flags, payload), (trailer_flags, trailers) = envelopes(body)
    assert flags == 0
    assert pb.InvokeResponse.FromString(payload).message.content[0].text == "from a browser"
    assert trailer_flags == 0x80
    assert b"grpc-status:0" in trailers.replace(b" ", b"")


async def test_an_unknown_enum_value_or_field_is_named_not_dropped() -> None:
    """A newcomer's ``"role": "user"`` was silently dropped ("role is required")."""
    async with serve_config(CONFIG, http=True) as served:
        url = served.http_url + INVOKE
        wrong_role = {"agent": "echo", "messages": [{"role": "user", "content": [{"text": "x"}]}]}
        typo = {**HELLO, "sesion_id": "s1"}
        answers = [
            await asyncio.to_thread(
                post, url, json.dumps(body).encode(), {"content-type": "application/json"}
            )
            for body in (wrong_role, typo)
        ]
        _, _, streamed = await asyncio.to_thread(
            post,
            served.http_url + STREAM,
            envelope(json.dumps(wrong_role).encode()),
            {"content-type": "application/connect+json"},
        )
        exposition = generate_latest(served.app.metrics.registry).decode()
    (role_status, _, role_body), (typo_status, _, typo_body) = answers
    assert role_status == typo_status == 400
    role = json.loads(role_body)
    assert role["code"] == "invalid_argument"
    assert role["message"].startswith("messages[0].role: unknown value 'user'")
    assert "ROLE_USER" in role["message"]
    assert "ROLE_ASSISTANT" in role["message"]
    violations = bad_request(role).field_violations
    assert [v.field for v in violations] == ["messages[0].role"]
    typo_error = json.loads(typo_body)
    assert typo_error["message"].startswith("sesion_id: no such field")
    assert "session_id" in typo_error["message"]
    (flags, payload), *_ = envelopes(streamed)
    assert flags == 2
    assert "unknown value 'user'" in json.loads(payload)["error"]["message"]
    # Refused by the chain's decode layer: traced and counted like any refusal.
    labels = {"door": "connect", "code": "INVALID_ARGUMENT"}
    assert sample(exposition, "switchboard_calls_total", rpc_method="Invoke", **labels) == 2
    assert sample(exposition, "switchboard_calls_total", rpc_method="Stream", **labels) == 1


async def test_a_binary_body_that_does_not_parse_is_refused_by_the_chain() -> None:
    async with serve_config(CONFIG, http=True) as served:
        status, _, body = await asyncio.to_thread(
            post,
            served.http_url + INVOKE,
            b"\x0f\xff\xff",
            {"content-type": "application/proto"},
        )
        exposition = generate_latest(served.app.metrics.registry).decode()
    assert status == 400
    assert "not a valid switchboard.v1.InvokeRequest" in json.loads(body)["message"]
    assert (
        sample(exposition, "switchboard_calls_total", door="connect", code="INVALID_ARGUMENT") == 1
    )


async def test_errors_carry_the_request_id_as_a_header() -> None:
    """Connect sends ``x-request-id`` as a header, gRPC-Web as a trailer (as gRPC does)."""
    nope = {**HELLO, "agent": "nope"}
    async with serve_config(CONFIG, http=True) as served:
        url = served.http_url + INVOKE
        _, unary_headers, _ = await asyncio.to_thread(
            post, url, json.dumps(nope).encode(), {"content-type": "application/json"}
        )
        _, mine, _ = await asyncio.to_thread(
            post,
            url,
            json.dumps(nope).encode(),
            {"content-type": "application/json", "x-request-id": "mine-1"},
        )
        _, ok_headers, _ = await asyncio.to_thread(
            post, url, json.dumps(HELLO).encode(), {"content-type": "application/json"}
        )
        _, stream_headers, _ = await asyncio.to_thread(
            post,
            served.http_url + STREAM,
            envelope(json.dumps(nope).encode()),
            {"content-type": "application/connect+json"},
        )
        request = pb.InvokeRequest(agent="nope")
        request.messages.add(role=pb.ROLE_USER).content.add(text="x")
        _, web_headers, web_body = await asyncio.to_thread(
            post,
            url,
            envelope(request.SerializeToString()),
            {"content-type": "application/grpc-web+proto", "x-request-id": "web-1"},
        )
    assert len(unary_headers["x-request-id"]) == 32
    assert mine["x-request-id"] == "mine-1"
    assert len(ok_headers["x-request-id"]) == 32
    assert len(stream_headers["x-request-id"]) == 32
    # gRPC-Web: a trailers-only answer carries its trailers as headers.
    trailers = {k.lower(): v for k, v in web_headers.items()}
    if "grpc-status" not in trailers:  # or in the trailer frame of the body
        (_, block), *_ = envelopes(web_body)
        trailers = dict(
            line.split(":", 1) for line in block.decode().replace(" ", "").split("\r\n") if line
        )
    assert trailers["grpc-status"] == "5"
    assert trailers["x-request-id"] == "web-1"


def bad_request(error: dict[str, Any]) -> error_details_pb2.BadRequest:
    for detail in error.get("details", []):
        if detail["type"] == "google.rpc.BadRequest":
            value = detail["value"]
            return error_details_pb2.BadRequest.FromString(
                base64.b64decode(value + "=" * (-len(value) % 4))
            )
    raise AssertionError(f"no BadRequest in {error}")
