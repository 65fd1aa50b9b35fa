"""Deadlines, cancellation, health, reflection and pagination on an in-process server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc
from switchboard_client import DeadlineExceededError

from service.providers.mock import MockProvider
from tests.harness import Served, serve_config
from tests.waiting import wait_for

SLOW = """
    targets:
      slow-start: {provider: mock, model: echo, mock: {ttft_s: 30}}
      slow-tokens: {provider: mock, model: echo, mock: {tokens_per_s: 20}}
    agents:
      stuck: {route: [slow-start]}
      slow: {route: [slow-tokens]}
"""


def mock_stats(served: Served, target: str) -> MockProvider:
    provider = served.app.providers[target]
    assert isinstance(provider, MockProvider)
    return provider


async def test_client_deadline_is_honoured_and_the_upstream_call_stops() -> None:
    async with serve_config(SLOW) as s:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await s.client.invoke("stuck", "hello", timeout=0.3)
        assert time.monotonic() - started < 5
        provider = mock_stats(s, "slow-start")
        await wait_for(lambda: provider.stats.in_flight == 0, what="the mock call to end")
        assert provider.stats.completed == 0


async def test_configured_default_deadline_applies_without_a_client_deadline() -> None:
    config = SLOW.replace("targets:", "server: {default_deadline_s: 0.2}\n    targets:", 1)
    async with serve_config(config) as s:
        with pytest.raises(DeadlineExceededError, match="deadline exceeded"):
            await s.client.invoke("stuck", "hello")


async def test_cancelling_a_stream_stops_the_work_behind_it() -> None:
    async with serve_config(SLOW) as s:
        provider = mock_stats(s, "slow-tokens")
        words = " ".join(f"w{i}" for i in range(200))
        stub = agent_pb2_grpc.AgentServiceStub(s.channel)
        call = stub.Stream(
            pb.StreamRequest(
                agent="slow",
                messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=words)])],
            )
        )
        kinds = [(await call.read()).WhichOneof("event") for _ in range(2)]
        assert kinds == ["start", "text_delta"]
        assert provider.stats.in_flight == 1

        call.cancel()

        await wait_for(lambda: provider.stats.cancelled == 1, what="the provider to see the cancel")
        assert provider.stats.in_flight == 0
        assert provider.stats.completed == 0


async def test_health_is_serving_overall_and_per_service(served: Served) -> None:
    stub = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "switchboard.v1.AgentService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_watch_reports_not_serving_as_soon_as_drain_starts() -> None:
    async with serve_config(SLOW) as s:
        stub = health_pb2_grpc.HealthStub(s.channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING

        stopping = asyncio.create_task(s.app.stop(grace_s=0.5))
        try:
            update = await asyncio.wait_for(watch.read(), timeout=5)
            assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            watch.cancel()
            await stopping


async def test_an_open_watch_does_not_hold_the_drain_for_the_grace_period() -> None:
    """A watcher with no call in flight: the server stops at once, not after grace_s, and the
    watcher is told NOT_SERVING before its stream ends cleanly."""
    async with serve_config(SLOW) as s:
        stub = health_pb2_grpc.HealthStub(s.channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        await asyncio.wait_for(s.app.stop(grace_s=30), timeout=20)
        assert time.monotonic() - started < 10
        statuses = await read_all(watch)
        assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await watch.code() == grpc.StatusCode.OK


async def test_a_watch_ends_only_when_the_calls_in_flight_are_done() -> None:
    async with serve_config(SLOW) as s:
        stub = health_pb2_grpc.HealthStub(s.channel)
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        agent = agent_pb2_grpc.AgentServiceStub(s.channel)
        call = agent.Stream(
            pb.StreamRequest(
                agent="slow",
                messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="a b c")])],
            )
        )
        assert (await call.read()).WhichOneof("event") == "start"
        stopping = asyncio.create_task(s.app.stop(grace_s=30))
        update = await asyncio.wait_for(watch.read(), timeout=10)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not watch.done()  # the stream's call is still being answered
        events = []
        while (event := await call.read()) is not grpc.aio.EOF:
            events.append(event.WhichOneof("event"))
        assert events[-1] == "finish"
        await asyncio.wait_for(stopping, timeout=20)
        assert (await read_all(watch))[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await watch.code() == grpc.StatusCode.OK


async def read_all(watch: Any) -> list[int]:
    """The statuses a Watch stream still sends, until it ends."""
    statuses = []
    while (response := await watch.read()) is not grpc.aio.EOF:
        statuses.append(response.status)
    return statuses


async def test_reflection_lists_the_services(served: Served) -> None:
    def reflect() -> tuple[set[str], str]:
        # The reflection client is blocking: run it off the loop that serves it.
        with grpc.insecure_channel(served.address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            file = database.FindFileContainingSymbol("switchboard.v1.AgentService")
            return set(database.get_services()), file.name

    services, file_name = await asyncio.wait_for(asyncio.to_thread(reflect), timeout=10)

    assert {
        "switchboard.v1.AgentService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    assert file_name == "switchboard/v1/agent.proto"


async def test_reflection_can_be_turned_off() -> None:
    config = SLOW.replace("targets:", "server: {reflection: false}\n    targets:", 1)
    async with serve_config(config) as s:
        call = s.channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_list_agents_pages_through_every_agent_in_order() -> None:
    agents = "\n".join(f"      agent-{i:02d}: {{route: [m]}}" for i in range(7))
    config = f"""
    targets: {{m: {{provider: mock, model: echo}}}}
    agents:
{agents}
    """
    async with serve_config(config) as s:
        stub = agent_pb2_grpc.AgentServiceStub(s.channel)
        names: list[str] = []
        token = ""
        pages = 0
        while True:
            page = await stub.ListAgents(pb.ListAgentsRequest(page_size=3, page_token=token))
            pages += 1
            names += [a.name for a in page.agents]
            token = page.next_page_token
            if not token:
                break
        assert names == [f"agent-{i:02d}" for i in range(7)]
        assert pages == 3


async def test_a_caller_deadline_longer_than_the_default_is_honoured() -> None:
    """server.default_deadline_s is for calls without a deadline; it does not cut one short."""
    config = """
        server: {default_deadline_s: 0.2}
        targets: {slowish: {provider: mock, model: echo, mock: {ttft_s: 0.5}}}
        agents: {a: {route: [slowish]}}
    """
    async with serve_config(config) as s:
        response = await s.client.invoke("a", "worth the wait", timeout=10)
        assert response.message.content[0].text == "worth the wait"
