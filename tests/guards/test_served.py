"""Guards through the real server: every provider (OpenAI and Anthropic through their SDKs
against the fakes, and the mock), Invoke and Stream, errors, records, cache and sessions."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator

import pytest
import yaml
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import AsyncClient, SwitchboardError

from service.observability.logging import CALLS_LOGGER, JsonFormatter
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.anthropic_fake import Scenario as AScenario
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.harness import Served, serve_config
from tests.provider_rigs import ANTHROPIC_KEY, OPENAI_KEY, collect

pytestmark = pytest.mark.asyncio

GUARDS = """
guards:
  pii: {kind: pii, action: redact}
  no-secrets: {kind: secrets, action: block}
  words: {kind: denied_terms, terms: [falcon], action: redact}
"""


def config(openai_url: str, anthropic_url: str, *, term: str = "falcon") -> str:
    return (
        GUARDS.replace("falcon", term)
        + f"""
targets:
  gpt: {{provider: openai, model: gpt-fake, base_url: {openai_url}/v1,
         api_key: {{env: OPENAI_API_KEY}}}}
  claude: {{provider: anthropic, model: claude-fake, base_url: {anthropic_url},
            api_key: {{env: ANTHROPIC_API_KEY}}}}
  mock-echo: {{provider: mock, model: echo}}
agents:
  gpt:
    route: [gpt]
    guards: {{input: [pii, no-secrets], output: [pii, no-secrets, words]}}
    cache: {{mode: "on"}}
  claude:
    route: [claude]
    guards: {{input: [pii, no-secrets], output: [pii, no-secrets, words]}}
    cache: {{mode: "on"}}
  echo:
    route: [mock-echo]
    guards: {{output: [pii, no-secrets]}}
  plain:
    route: [gpt]
"""
    )


@contextlib.asynccontextmanager
async def rig() -> AsyncIterator[tuple[OpenAIFake, AnthropicFake, Served]]:
    env = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    async with (
        OpenAIFake() as openai,
        AnthropicFake() as anthropic,
        serve_config(config(openai.base_url, anthropic.base_url), env) as served,
    ):
        yield openai, anthropic, served


SPLIT = ("Reach me at bob.sm", "ith@exam", "ple.com, about falcon.")
REDACTED = "Reach me at [EMAIL], about [DENIED]."


def push(openai: OpenAIFake, anthropic: AnthropicFake, chunks: tuple[str, ...]) -> None:
    openai.push(Scenario(text="".join(chunks), chunks=chunks))
    anthropic.push(AScenario(text="".join(chunks), chunks=chunks))


def verdicts(finish: pb.StreamFinish | pb.InvokeResponse) -> set[tuple[str, str, str, str]]:
    return {(v.guard, v.stage, v.category, v.action) for v in finish.guard_verdicts}


@pytest.mark.parametrize("agent", ["gpt", "claude"])
async def test_stream_and_invoke_redact_a_split_email_on_every_sdk_provider(agent: str) -> None:
    async with rig() as (openai, anthropic, served):
        push(openai, anthropic, SPLIT)
        events, error = await collect(served.client, agent, "hi", cache=False)
        assert error is None
        deltas = [e.text_delta.text for e in events if e.WhichOneof("event") == "text_delta"]
        assert "".join(deltas) == REDACTED
        assert not any(p in d for d in deltas for p in ("bob", "exam", "falcon"))
        finish = events[-1].finish
        assert finish.finish_reason == pb.FINISH_REASON_STOP
        assert verdicts(finish) == {
            ("pii", "output", "email", "redact"),
            ("words", "output", "denied_term", "redact"),
        }
        push(openai, anthropic, SPLIT)
        response = await served.client.invoke(agent, "hi", cache=False)
        assert response.message.content[0].text == REDACTED
        assert verdicts(response) == verdicts(finish)


async def test_the_mock_provider_is_guarded_too() -> None:
    async with rig() as (_, _, served):
        response = await served.client.invoke("echo", "mail bob@example.com please")
        assert "bob" not in response.message.content[0].text
        assert "[EMAIL]" in response.message.content[0].text


@pytest.mark.parametrize("agent", ["gpt", "claude"])
async def test_a_blocked_input_is_invalid_argument_with_error_info_and_no_upstream_call(
    agent: str,
) -> None:
    async with rig() as (openai, anthropic, served):
        secret = "use sk-proj-abcdefghijklmnopqrstuvwxyz0123 for it"
        with pytest.raises(SwitchboardError) as caught:
            await served.client.invoke(agent, secret)
        _, streamed = await collect(served.client, agent, secret)
        for error in (caught.value, streamed):
            assert error is not None
            assert error.code.name == "INVALID_ARGUMENT"
            assert error.reason == "GUARD_BLOCKED"
            assert error.metadata["guard"] == "no-secrets"
            assert error.metadata["stage"] == "input"
            assert error.metadata["category"] == "openai_key"
            assert "abcdefgh" not in str(error)
        assert openai.received == []
        assert anthropic.received == []
        blocked = served.app.metrics.registry.get_sample_value(
            "switchboard_guard_verdicts_total",
            {"guard": "no-secrets", "stage": "input", "action": "block"},
        )
        assert blocked == 2


async def test_redacted_input_is_what_the_upstream_the_session_and_the_cache_see() -> None:
    async with rig() as (openai, _, served):
        first = await served.client.invoke("gpt", "I am ann@example.com", session_id="s1")
        assert verdicts(first) == {("pii", "input", "email", "redact")}
        sent = openai.received[-1].body["messages"][-1]["content"]
        assert sent == "I am [EMAIL]"
        session = await served.client.get_session("s1")
        stored = [p.text for m in session.messages for p in m.content]
        assert "I am [EMAIL]" in stored
        assert not any("ann@" in t for t in stored)
        # Another address redacts to the same text: the cache key is the redacted input.
        other = await served.client.invoke("gpt", "I am joe@example.org")
        assert other.cache_hit
        assert verdicts(other) == {("pii", "input", "email", "redact")}
        assert len(openai.received) == 1


async def test_a_blocked_answer_ends_with_content_filter_and_is_never_cached() -> None:
    async with rig() as (openai, _, served):
        chunks = ("Your key: sk-proj-abcdefg", "hijklmnopqrstuv", "wxyz0123 enjoy")
        for _ in range(2):
            # Apart (deltas that arrive in one read are joined: the guard would see the
            # whole key at once and hold back the whole delta).
            openai.push(Scenario(text="".join(chunks), chunks=chunks, chunk_delay_s=0.05))
            events, error = await collect(served.client, "gpt", "what is my key?")
            assert error is None
            text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
            assert text == "Your key: "
            assert events[-1].finish.finish_reason == pb.FINISH_REASON_CONTENT_FILTER
            assert not events[-1].finish.cache_hit
            assert verdicts(events[-1].finish) == {("no-secrets", "output", "openai_key", "block")}
            assert events[-2].HasField("usage")  # the call is still charged
        assert len(openai.received) == 2  # the block was not cached: asked again


async def test_unguarded_agents_are_untouched() -> None:
    async with rig() as (openai, _, served):
        openai.push(Scenario(text="mail bob@example.com"))
        response = await served.client.invoke("plain", "hi bob@example.com")
        assert response.message.content[0].text == "mail bob@example.com"
        assert openai.received[-1].body["messages"][-1]["content"] == "hi bob@example.com"
        assert not response.guard_verdicts


async def test_a_reload_that_changes_a_guard_leaves_streams_in_flight_on_their_config() -> None:
    async with rig() as (openai, anthropic, served):
        chunks = ("falcon and ", "eagle, ", "falcon and ", "eagle.")
        slow = Scenario(text="".join(chunks), chunks=chunks, chunk_delay_s=0.3)
        openai.push(slow, Scenario(text="falcon and eagle."))
        stream = served.client.stream("gpt", "birds?", cache=False)
        first = await anext(stream)
        assert first.HasField("start")
        raw = yaml.safe_load(served.path.read_text())
        raw["guards"]["words"]["terms"] = ["eagle"]
        served.path.write_text(yaml.safe_dump(raw))
        assert await served.app.reload()
        rest = [e async for e in stream]
        text = "".join(e.text_delta.text for e in rest if e.HasField("text_delta"))
        assert text == "[DENIED] and eagle, [DENIED] and eagle."
        after = await served.client.invoke("gpt", "birds?", cache=False)
        assert after.message.content[0].text == "falcon and [DENIED]."
        assert anthropic.received == []


async def test_the_call_log_names_the_verdicts_never_the_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with rig() as (openai, _, served):
        openai.push(Scenario(text="write to bob@example.com"))
        await served.client.invoke("gpt", "hi", cache=False)
        with pytest.raises(SwitchboardError):
            await served.client.invoke("gpt", "sk-proj-abcdefghijklmnopqrstuvwxyz0123")
        events, _ = await collect(served.client, "echo", "mail ann@example.com")
        assert events[-1].HasField("finish")
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if r.name == CALLS_LOGGER]
    calls = [json.loads(line) for line in lines]
    assert [c.get("guards") for c in calls] == [
        ["pii:output:email:redact:1"],
        ["no-secrets:input:openai_key:block:1"],
        ["pii:output:email:redact:1"],
    ]
    assert calls[1]["reason"] == "GUARD_BLOCKED"
    everything = "\n".join(formatter.format(r) for r in caplog.records)
    assert "bob@" not in everything
    assert "ann@" not in everything
    assert "abcdefghij" not in everything


async def test_the_default_config_shows_one_guarded_agent(client: AsyncClient) -> None:
    response = await client.invoke("echo", "mail me at bob@example.com")
    assert response.message.content[0].text == "mail me at [EMAIL]"
    with pytest.raises(SwitchboardError) as caught:
        await client.invoke("echo", "my key is sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
    assert caught.value.reason == "GUARD_BLOCKED"
