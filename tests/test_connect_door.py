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
    assert sample(exposition, calls, method="Invoke", tenant="acme", code="OK") == 1
    assert sample(exposition, calls, method="Invoke", code="UNAUTHENTICATED") == 1


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
