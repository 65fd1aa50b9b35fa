"""The response cache and idempotent Invoke through the real server, on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import timestamp_pb2
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import usage_pb2 as upb
from switchboard_client import FailedPreconditionError, Folder, InvalidArgumentError

from service.providers.mock import MockStats
from tests.harness import Served
from tests.state.stateful import invoke_as, serve_state, usage

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["embedded", "shared"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stats(served: Served, target: str) -> MockStats:
    return served.app.providers[target].stats  # type: ignore[attr-defined, no-any-return]


# response cache


async def test_identical_calls_are_served_from_the_cache_at_no_cost(backend: str) -> None:
    async with serve_state(backend) as served:
        first = await served.client.invoke("cached", "same question")
        second = await served.client.invoke("cached", "same question")

        assert stats(served, "mock-echo").started == 1
        assert (first.cache_hit, second.cache_hit) == (False, True)
        assert second.message == first.message
        assert second.attempts == 0
        assert first.usage.cost_usd > 0
        assert second.usage.cost_usd == 0
        assert second.usage.output_tokens == first.usage.output_tokens
        assert second.target == first.target

        start = timestamp_pb2.Timestamp()
        start.FromSeconds(int(time.time()) - 60)
        (group,) = (await usage(served).GetUsage(upb.GetUsageRequest(start_time=start))).groups
        assert (group.calls, group.cache_hits) == (2, 1)
        assert group.cost_usd == pytest.approx(first.usage.cost_usd)


async def test_a_stream_is_replayed_from_the_cache(backend: str) -> None:
    async with serve_state(backend) as served:
        invoked = await served.client.invoke("cached", "replay me please", request_id="same")
        events = [
            e async for e in served.client.stream("cached", "replay me please", request_id="same")
        ]
        kinds = [e.WhichOneof("event") for e in events]
        # Cached by an Invoke, which takes the answer whole: its text is one delta.
        assert kinds == ["start", "text_delta", "usage", "finish"]
        assert events[-1].finish.cache_hit
        folder = Folder()
        for event in events:
            folder.add(event)
        replayed = folder.result()
        assert replayed.message == invoked.message
        assert replayed.cache_hit
        assert stats(served, "mock-echo").started == 1


async def test_what_changes_the_answer_changes_the_key(backend: str) -> None:
    async with serve_state(backend) as served:
        await served.client.invoke("cached", "q")
        await served.client.invoke("cached", "q", parameters=pb.Parameters(temperature=0.5))
        await served.client.invoke("cached", "another q")
        assert stats(served, "mock-echo").started == 3
        again = await served.client.invoke("cached", "q", parameters=pb.Parameters(temperature=0.5))
        assert again.cache_hit


async def test_requests_opt_in_and_out_where_the_agent_allows(backend: str) -> None:
    async with serve_state(backend) as served:
        echo = stats(served, "mock-echo")
        await served.client.invoke("cached", "q")
        skipped = await served.client.invoke("cached", "q", cache=False)
        assert not skipped.cache_hit
        assert echo.started == 2

        await served.client.invoke("opt-in", "q")
        assert not (await served.client.invoke("opt-in", "q")).cache_hit
        await served.client.invoke("opt-in", "q", cache=True)
        assert (await served.client.invoke("opt-in", "q", cache=True)).cache_hit

        with pytest.raises(InvalidArgumentError, match="agent 'echo' has no response cache"):
            await served.client.invoke("echo", "q", cache=True)


async def test_concurrent_identical_calls_make_one_upstream_call(backend: str) -> None:
    async with serve_state(backend) as served:

        async def streamed() -> pb.InvokeResponse:
            folder = Folder()
            async for event in served.client.stream("slow-cached", "stampede"):
                folder.add(event)
            return folder.result()

        answers = await asyncio.gather(*(streamed() for _ in range(8)))
        assert stats(served, "mock-slow").started == 1
        assert sorted(a.cache_hit for a in answers) == [False] + [True] * 7
        assert len({a.message.SerializeToString() for a in answers}) == 1


async def test_the_cache_is_tenant_scoped(backend: str) -> None:
    async with serve_state(backend) as served:
        theirs = await invoke_as(served.app.runner, "acme", "cached", "private answer")
        mine = await served.client.invoke("cached", "private answer")
        assert not theirs.cache_hit
        assert not mine.cache_hit
        assert stats(served, "mock-echo").started == 2


# idempotent Invoke


async def test_a_retried_request_id_gets_the_recorded_answer(backend: str) -> None:
    async with serve_state(backend) as served:
        first = await served.client.invoke("echo", "pay once", request_id="idem-1")
        retry = await served.client.invoke("echo", "pay once", request_id="idem-1")

        assert retry == first
        assert stats(served, "mock-echo").started == 1
        totals = await served.app.stores.durable.totals("default", 0, time.time() + 1, ())
        assert totals[0].calls == 1  # charged once


async def test_a_reused_request_id_with_another_body_is_failed_precondition(
    backend: str,
) -> None:
    async with serve_state(backend) as served:
        await served.client.invoke("echo", "first body", request_id="idem-2")
        with pytest.raises(FailedPreconditionError, match="request_id was already used"):
            await served.client.invoke("echo", "second body", request_id="idem-2")


async def test_a_concurrent_duplicate_waits_for_the_first(backend: str) -> None:
    async with serve_state(backend) as served:
        answers = await asyncio.gather(
            *(served.client.invoke("slow", "once", request_id="idem-3") for _ in range(5))
        )
        assert stats(served, "mock-slow").started == 1
        assert all(a == answers[0] for a in answers)


async def test_without_a_request_id_every_call_runs(backend: str) -> None:
    async with serve_state(backend) as served:
        a = await served.client.invoke("echo", "x")
        b = await served.client.invoke("echo", "x")
        assert a.request_id != b.request_id
        assert stats(served, "mock-echo").started == 2
