"""An Invoke cut short while the router reads its answer is charged (issue 12 §2 for
whole answers, with issue 17's non-streamed upstream requests).

Two kinds of attempt: one that streams (its target has a first-token timeout, so it must)
is charged its prompt and the answer it delivered before the cut; one that asked for a
non-streamed answer (no timing depends on its first token) saw nothing, and the upstream may
bill the whole answer, so it is charged its prompt and its output bound (``max_tokens``).
Priced as in test_money_e2e (0.001 USD an input token, 0.002 an output token)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc

from tests.state.test_money_e2e import (
    BUDGET,
    FIFTEEN,
    IN_NANOS,
    OUT_NANOS,
    _budget_spent,
    _serve,
    _wait_calls,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.asyncio

CUT = """
targets:
  mock-slow-streamed:
    provider: mock
    model: echo
    mock: {tokens_per_s: 10}
    first_token_timeout_s: 30
  mock-slow-whole:
    provider: mock
    model: echo
    mock: {tokens_per_s: 10}
agents:
  slow-streamed:
    route: [mock-slow-streamed]
  slow-whole:
    route: [mock-slow-whole]
    parameters: {max_tokens: 20}
"""


def _merged(extra: str) -> str:
    """CUT's targets and agents added to the money config's, for ``_serve``."""
    return BUDGET + extra


async def _invoke_until_deadline(channel: grpc.aio.Channel, agent: str) -> None:
    """An Invoke of 15 words (1.4 s at 10 words a second) that the caller gives 0.7 s."""
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    request = pb.InvokeRequest(
        agent=agent,
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=FIFTEEN)])],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Invoke(request, timeout=0.7)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize("backend", ["embedded"])
async def test_a_streamed_invoke_cut_by_its_deadline_is_charged_what_it_delivered(
    backend: str,
) -> None:
    async with _serve(backend, _merged(CUT)) as served:
        await _invoke_until_deadline(served.channel, "slow-streamed")
        _, input_tokens, output_tokens, cost = await _wait_calls(served.app.stores.durable, 1)
        assert input_tokens >= 15
        assert 1 <= output_tokens < 15  # what came before the cut, not the whole answer
        assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS
        await wait_for(lambda: served.app.pipeline.recorder.in_flight == 0)
        assert await _budget_spent(served) == cost


@pytest.mark.parametrize("backend", ["embedded"])
async def test_a_non_streamed_invoke_cut_by_its_deadline_is_charged_its_bound(
    backend: str,
) -> None:
    async with _serve(backend, _merged(CUT)) as served:
        await _invoke_until_deadline(served.channel, "slow-whole")
        _, input_tokens, output_tokens, cost = await _wait_calls(served.app.stores.durable, 1)
        assert input_tokens >= 15
        assert output_tokens == 20  # max_tokens: all the upstream may have generated
        assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS
        await wait_for(lambda: served.app.pipeline.recorder.in_flight == 0)
        assert await _budget_spent(served) == cost


@pytest.mark.parametrize("backend", ["embedded"])
async def test_a_caller_that_leaves_a_streamed_invoke_is_charged(backend: str) -> None:
    """The caller cancels (not a deadline): the call is cancelled while the router reads."""
    async with _serve(backend, _merged(CUT)) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        request = pb.InvokeRequest(
            agent="slow-streamed",
            messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=FIFTEEN)])],
        )
        call = stub.Invoke(request, timeout=30)
        mock = served.app.providers["mock-slow-streamed"]
        # The first word comes at once (the server runs in this loop): once the mock has
        # started, the router holds it and waits for the second, 0.1 s later.
        await wait_for(lambda: mock.stats.started == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        _, input_tokens, output_tokens, cost = await _wait_calls(served.app.stores.durable, 1)
        assert input_tokens >= 15
        assert output_tokens >= 1
        assert cost == input_tokens * IN_NANOS + output_tokens * OUT_NANOS
