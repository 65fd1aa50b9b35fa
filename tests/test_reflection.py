"""Reflection that helps: grpcurl describes the contract with its comments, over both
grpc.reflection.v1 and v1alpha, and method symbols resolve."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tests.harness import serve_config

CONFIG = """
targets:
  mock-echo: {provider: mock, model: echo}
agents:
  echo: {route: [mock-echo]}
"""
GRPCURL = Path(sys.executable).parent / "grpcurl"


async def grpcurl(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL), "-plaintext", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_grpcurl_describe_shows_the_contracts_comments() -> None:
    async with serve_config(CONFIG) as served:
        service = await grpcurl(served.address, "describe", "switchboard.v1.AgentService")
        method = await grpcurl(served.address, "describe", "switchboard.v1.AgentService.Invoke")
        message = await grpcurl(served.address, "describe", "switchboard.v1.Tool")
        listed = await grpcurl(served.address, "list")
    assert "AgentService runs configured agents" in service
    assert "Invoke runs an agent and returns its whole answer" in method
    assert "The same schema as JSON text" in message
    assert "grpc.reflection.v1.ServerReflection" in listed
    assert "grpc.health.v1.Health" in listed


async def ask(address: str, path: str, symbol: str) -> reflection_pb2.ServerReflectionResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        async for response in call(iter([request]), timeout=30):
            return response
    raise AssertionError("no answer")


async def test_v1_and_v1alpha_answer_with_source_info() -> None:
    async with serve_config(CONFIG) as served:
        for version in ("v1", "v1alpha"):
            path = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            answer = await ask(served.address, path, "switchboard.v1.AgentService.Stream")
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in answer.file_descriptor_response.file_descriptor_proto
            ]
            agent = next(f for f in files if f.name == "switchboard/v1/agent.proto")
            assert agent.source_code_info.location, version
            assert "google/protobuf/struct.proto" in {f.name for f in files}
