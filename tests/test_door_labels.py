"""Every door names itself: the ``door`` label of the call metrics, the call log's ``door``
field and the span's ``switchboard.door`` (with ``rpc.system`` only where the door is an RPC
protocol), though all of them run the same chain and servicer."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import urllib.request

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest
from switchboard.v1 import agent_pb2 as pb

from service.observability.logging import CALLS_LOGGER, JsonFormatter
from tests.chain_helpers import sample
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


def _post(url: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(url, body, {"content-type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
        return int(answer.status)


async def test_each_door_labels_its_calls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serve_config(CONFIG, http=True, tracer_provider=provider) as served:
        await served.client.invoke("echo", "over grpc")
        async with openai.AsyncOpenAI(
            base_url=served.http_url + "/v1", api_key="x", max_retries=0
        ) as sdk:
            await sdk.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "over openai"}]
            )
        body = {"agent": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "c"}]}]}
        url = served.http_url + INVOKE
        await asyncio.to_thread(_post, url, json.dumps(body).encode(), "application/json")
        request = pb.InvokeRequest(agent="echo")
        request.messages.add(role=pb.ROLE_USER).content.add(text="web")
        frame = request.SerializeToString()
        await asyncio.to_thread(
            _post, url, struct.pack(">BI", 0, len(frame)) + frame, "application/grpc-web+proto"
        )
        exposition = generate_latest(served.app.metrics.registry).decode()
    for door in ("grpc", "openai", "connect", "grpc_web"):
        labels = {"door": door, "rpc_method": "Invoke", "agent": "echo"}
        assert sample(exposition, "switchboard_calls_total", **labels, code="OK") == 1, door
        assert sample(exposition, "switchboard_call_duration_seconds_count", **labels) == 1
    spans = [s for s in exporter.get_finished_spans() if s.name == INVOKE[1:]]
    attributes = {str(s.attributes["switchboard.door"]): s.attributes for s in spans}
    assert set(attributes) == {"grpc", "openai", "connect", "grpc_web"}
    assert attributes["grpc"]["rpc.system"] == "grpc"
    assert attributes["grpc_web"]["rpc.system"] == "grpc"
    assert attributes["connect"]["rpc.system"] == "connect_rpc"
    assert "rpc.system" not in attributes["openai"]
    assert attributes["openai"]["rpc.method"] == "Invoke"
    formatter = JsonFormatter()
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == CALLS_LOGGER]
    assert sorted(line["door"] for line in lines) == ["connect", "grpc", "grpc_web", "openai"]


async def test_logs_say_auth_is_off_once_and_carry_no_terminal_colours(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with serve_config(CONFIG, http=True):
        pass
    messages = [r.getMessage() for r in caplog.records]
    assert sum("auth is OFF" in m for m in messages) == 1
    # uvicorn's own lines (its startup line adds a coloured copy of the message) are there...
    assert any(r.name.startswith("uvicorn") for r in caplog.records)
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records]
    # ...and come out as plain JSON.
    assert not any("\x1b" in line or "\\u001b" in line for line in lines)
    assert not any("color_message" in json.loads(line) for line in lines)
