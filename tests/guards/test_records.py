"""Every guard decision is recorded: the audit entry carries the verdicts (a refused input
too), a cached answer keeps the verdicts it was given, and tool calls are checked for every
agent, through the real server and the real OpenAI SDK against the fake."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import SwitchboardError

from service.state.records import AuditEntry
from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.openai_fake import FakeToolCall, OpenAIFake, Scenario
from tests.guards.test_served import config, rig, verdicts
from tests.harness import Served, serve_config
from tests.provider_rigs import ANTHROPIC_KEY, OPENAI_KEY, collect

ENV = {"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY}

pytestmark = pytest.mark.asyncio


async def audited(served: Served, request_id: str) -> AuditEntry:
    entries = await served.app.stores.durable.recent_audit("default", 50)
    (entry,) = [e for e in entries if e.request_id == request_id]
    return entry


def detail(entry: AuditEntry) -> set[tuple[str, str, str, str, int]]:
    if not entry.detail:
        return set()
    return {
        (v["guard"], v["stage"], v["category"], v["action"], v["count"])
        for v in json.loads(entry.detail)["guards"]
    }


def counted(served: Served, guard: str, stage: str, action: str) -> float:
    value = served.app.metrics.registry.get_sample_value(
        "switchboard_guard_verdicts_total", {"guard": guard, "stage": stage, "action": action}
    )
    return value or 0.0


async def test_a_refused_input_is_audited_with_its_verdicts_and_charged_nothing() -> None:
    async with rig() as (openai, _, served):
        text = "I am ann@example.com, key sk-proj-abcdefghijklmnopqrstuvwxyz0123"
        with pytest.raises(SwitchboardError) as caught:
            await served.client.invoke("gpt", text, request_id="refused-1")
        assert caught.value.reason == "GUARD_BLOCKED"
        entry = await audited(served, "refused-1")
        assert (entry.action, entry.resource, entry.outcome) == (
            "call",
            "agent:gpt",
            "InvalidArgument",
        )
        assert detail(entry) == {
            ("pii", "input", "email", "redact", 1),
            ("no-secrets", "input", "openai_key", "block", 1),
        }
        assert "ann@" not in str(entry)
        assert "abcdefgh" not in str(entry)
        assert openai.received == []
        totals = await served.app.stores.durable.totals("default", 0, 2e9, ())
        assert totals == []  # nothing reached the upstream: no ledger line, no charge


async def test_an_answered_call_audits_its_input_and_output_verdicts() -> None:
    async with rig() as (openai, _, served):
        openai.push(Scenario(text="write to bob@example.com about falcon"))
        response = await served.client.invoke(
            "gpt", "I am ann@example.com", request_id="answered-1", cache=False
        )
        expected = {
            ("pii", "input", "email", "redact", 1),
            ("pii", "output", "email", "redact", 1),
            ("words", "output", "denied_term", "redact", 1),
        }
        assert {(*v, 1) for v in verdicts(response)} == expected
        entry = await audited(served, "answered-1")
        assert entry.outcome == "ok"
        assert detail(entry) == expected
        assert "bob@" not in str(entry)


async def test_a_cache_hit_keeps_the_output_verdicts_of_the_answer_it_replays() -> None:
    async with rig() as (openai, _, served):
        openai.push(Scenario(text="write to bob@example.com"))
        first = await served.client.invoke("gpt", "where to?", request_id="made")
        assert not first.cache_hit
        redactions = counted(served, "pii", "output", "redact")
        assert redactions == 1
        hit = await served.client.invoke("gpt", "where to?", request_id="replayed")
        events, error = await collect(served.client, "gpt", "where to?")
        assert error is None
        streamed = events[-1].finish
        assert hit.cache_hit
        assert streamed.cache_hit
        assert len(openai.received) == 1
        assert hit.message.content[0].text == first.message.content[0].text == "write to [EMAIL]"
        assert verdicts(hit) == verdicts(first) == verdicts(streamed)
        assert verdicts(hit) == {("pii", "output", "email", "redact")}
        assert detail(await audited(served, "replayed")) == {
            ("pii", "output", "email", "redact", 1)
        }
        # The replay made no new decision: the metric counts guard work, once.
        assert counted(served, "pii", "output", "redact") == redactions


async def test_an_agent_with_no_guards_still_has_its_tool_calls_checked() -> None:
    async with rig() as (openai, _, served):
        for _ in range(2):
            openai.push(Scenario(text="", tool_calls=(FakeToolCall("delete_everything"),)))
        events, error = await collect(served.client, "plain", "tidy up", request_id="tool-1")
        assert error is None
        assert not any(e.HasField("tool_call_delta") for e in events)
        finish = events[-1].finish
        assert finish.finish_reason == pb.FINISH_REASON_CONTENT_FILTER
        policy = {("tool_policy", "tool_call", "tool_not_offered", "block")}
        assert verdicts(finish) == policy
        response = await served.client.invoke("plain", "tidy up")
        assert response.finish_reason == pb.FINISH_REASON_CONTENT_FILTER
        assert not response.message.tool_calls
        assert verdicts(response) == policy
        entry = await audited(served, "tool-1")
        assert detail(entry) == {(*next(iter(policy)), 1)}
        # Answered (and charged), but stopped: the audit says so, not "ok".
        assert entry.outcome == "content_filter"


async def test_each_verdict_is_a_span_event_and_each_guard_is_timed() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with (
        OpenAIFake() as openai,
        AnthropicFake() as anthropic,
        serve_config(
            config(openai.base_url, anthropic.base_url), ENV, tracer_provider=provider
        ) as served,
    ):
        await served.client.invoke("echo", "mail ann@example.com")
        timed = served.app.metrics.registry.get_sample_value(
            "switchboard_guard_duration_seconds_count", {"guard": "pii", "stage": "output"}
        )
        assert timed is not None
        assert timed >= 1
    events = [e for span in exporter.get_finished_spans() for e in span.events]
    verdicts_seen = [dict(e.attributes or {}) for e in events if e.name == "guard.verdict"]
    assert verdicts_seen == [
        {
            "switchboard.guard.name": "pii",
            "switchboard.guard.stage": "output",
            "switchboard.guard.category": "email",
            "switchboard.guard.action": "redact",
            "switchboard.guard.count": 1,
        }
    ]
    assert "ann@" not in str(events)
