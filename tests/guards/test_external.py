"""The external guard: its wire request, its three answers, and both fail modes when it
times out or answers nonsense."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import SwitchboardError

from tests.fakes.guard_fake import GuardFake, Verdict
from tests.harness import Served, serve_config
from tests.provider_rigs import collect

pytestmark = pytest.mark.asyncio


def config(url: str) -> str:
    return f"""
guards:
  closed: {{kind: external, url: "{url}/judge", timeout_s: 0.3, fail_mode: closed,
            api_key: {{env: GUARD_KEY}}}}
  open: {{kind: external, url: "{url}/judge", timeout_s: 0.3, fail_mode: open}}
targets:
  echo: {{provider: mock, model: echo}}
agents:
  strict:
    route: [echo]
    guards: {{input: [closed]}}
  lenient:
    route: [echo]
    guards: {{input: [open]}}
  answers:
    route: [echo]
    guards: {{output: [closed]}}
"""


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[tuple[GuardFake, Served]]:
    async with (
        GuardFake() as fake,
        serve_config(config(fake.base_url), {"GUARD_KEY": "guard-secret-1"}) as served,
    ):
        yield fake, served


def verdicts(message: pb.InvokeResponse | pb.StreamFinish) -> set[tuple[str, str, str, str]]:
    return {(v.guard, v.stage, v.category, v.action) for v in message.guard_verdicts}


async def test_the_endpoint_gets_the_text_and_its_block_is_guard_blocked() -> None:
    async with rig() as (fake, served):
        fake.push(Verdict({"action": "block", "category": "violence"}))
        with pytest.raises(SwitchboardError) as caught:
            await served.client.invoke("strict", "a violent text")
        assert caught.value.reason == "GUARD_BLOCKED"
        assert caught.value.metadata["guard"] == "closed"
        assert caught.value.metadata["category"] == "violence"
        (request,) = fake.received
        assert request.path == "/judge"
        assert request.body == {
            "text": "a violent text",
            "stage": "input",
            "agent": "strict",
            "guard": "closed",
        }
        assert request.headers["authorization"] == "Bearer guard-secret-1"


async def test_redact_spans_and_allow() -> None:
    async with rig() as (fake, served):
        fake.push(
            Verdict({"action": "redact", "spans": [{"start": 3, "end": 8, "category": "name"}]})
        )
        response = await served.client.invoke("strict", "hi Alice, how are you")
        assert response.message.content[0].text == "hi [NAME], how are you"
        assert verdicts(response) == {("closed", "input", "name", "redact")}
        fake.push(Verdict({"action": "allow"}))
        response = await served.client.invoke("strict", "hello")
        assert response.message.content[0].text == "hello"
        assert not response.guard_verdicts


@pytest.mark.parametrize(
    "failure",
    [Verdict(hang=True), Verdict(status=500), Verdict({"action": "maybe"}), Verdict([1, 2])],
)
async def test_a_failing_guard_fails_closed_or_open_as_configured(failure: Verdict) -> None:
    async with rig() as (fake, served):
        fake.push(failure)
        began = time.monotonic()
        with pytest.raises(SwitchboardError) as caught:
            await served.client.invoke("strict", "anything", timeout=30)
        assert time.monotonic() - began < 20  # the guard's timeout, not the call's
        assert caught.value.code.name == "INVALID_ARGUMENT"
        assert caught.value.metadata["category"] == "guard_error"

        fake.push(failure)
        response = await served.client.invoke("lenient", "anything", timeout=30)
        assert response.message.content[0].text == "anything"
        assert verdicts(response) == {("open", "input", "guard_error", "log")}


async def test_on_the_output_the_answer_is_held_whole_and_a_block_sends_none_of_it() -> None:
    async with rig() as (fake, served):
        fake.push(Verdict({"action": "block", "category": "self_harm"}))
        events, error = await collect(served.client, "answers", "some words to echo back")
        assert error is None
        assert not any(e.HasField("text_delta") for e in events)
        finish = events[-1].finish
        assert finish.finish_reason == pb.FINISH_REASON_CONTENT_FILTER
        assert verdicts(finish) == {("closed", "output", "self_harm", "block")}
        (request,) = fake.received
        assert request.body["text"] == "some words to echo back"
        assert request.body["stage"] == "output"
