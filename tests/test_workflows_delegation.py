"""Handoff and supervisor workflows end to end: the real server in-process, the real OpenAI
SDK against the fake upstream, whose agents call the tools the workflow offers them; and a
supervisor's run killed mid-delegation, resumed without repeating a finished turn."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc

from service.config import ConfigError, load
from tests.fakes.openai_fake import FakeToolCall, Scenario
from tests.harness import serve_config
from tests.waiting import wait_for
from tests.workflow_rig import (
    AgentsFake,
    agents_yaml,
    calls_by_agent,
    follow,
    server,
    stub_for,
    user,
    write_config,
)

WORKFLOWS = """
workflows:
  desk:
    kind: handoff
    description: triage, then the right desk
    start: triage
    agents: [billing, tech]
    max_handoffs: 2
  lead:
    kind: supervisor
    supervisor: planner
    agents: [researcher, writer]
    max_delegations: 3
"""
AGENTS = ("triage", "billing", "tech", "planner", "researcher", "writer")


def config(fake: AgentsFake) -> str:
    return agents_yaml(fake.base_url, *AGENTS) + WORKFLOWS


def calls(*pairs: tuple[str, dict[str, str]]) -> Scenario:
    """An answer that calls tools: (name, arguments) each."""
    return Scenario(
        tool_calls=tuple(
            FakeToolCall(name, json.dumps(arguments), id=f"call_{i}")
            for i, (name, arguments) in enumerate(pairs)
        )
    )


def requests_of(fake: AgentsFake, agent: str) -> list[dict[str, Any]]:
    """The upstream request bodies of ``agent`` (its system prompt), in order."""
    return [r.body for r in fake.received if r.body["messages"][0]["content"] == agent]


def tool_names(body: dict[str, Any]) -> set[str]:
    return {t["function"]["name"] for t in body.get("tools", [])}


async def test_a_handoff_passes_the_conversation_on_up_to_its_limit() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        fake.first["triage"] = [calls(("transfer_to_billing", {"reason": "a refund"}))]
        fake.first["billing"] = [calls(("transfer_to_tech", {}))]
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        answer = await stub.Invoke(pb.InvokeRequest(agent="desk", messages=[user("my bill")]))

        assert [s.step_id for s in answer.workflow_steps] == ["1-triage", "2-billing", "3-tech"]
        assert answer.message.content[0].text.startswith("tech says:")
        assert answer.usage.total_tokens == 3 * 18
        (triage,) = requests_of(fake, "triage")
        assert tool_names(triage) == {"transfer_to_billing", "transfer_to_tech"}
        (billing,) = requests_of(fake, "billing")
        assert tool_names(billing) == {"transfer_to_triage", "transfer_to_tech"}
        texts = [m.get("content") for m in billing["messages"]]
        assert "my bill" in texts
        assert "triage handed this conversation to you (billing): a refund" in texts
        # Two handoffs made: the third agent is offered none and answers itself.
        (tech,) = requests_of(fake, "tech")
        assert "tools" not in tech

        events = [
            e async for e in stub.Stream(pb.StreamRequest(agent="desk", messages=[user("hi")]))
        ]
        started = [e.workflow_step_start.agent for e in events if e.HasField("workflow_step_start")]
        assert started == ["triage"]  # no transfer queued this time: triage answers
        assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP


async def test_a_supervisor_delegates_at_once_and_reads_the_answers_as_tool_results() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        fake.first["planner"] = [
            calls(("researcher", {"task": "find facts"}), ("writer", {"task": "draft it"}))
        ]
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        events = [
            e async for e in stub.Stream(pb.StreamRequest(agent="lead", messages=[user("plan")]))
        ]
        finished = [
            e.workflow_step_finish.step for e in events if e.HasField("workflow_step_finish")
        ]
        ids = [s.step_id for s in finished]
        assert ids[0] == "supervisor-1"
        assert set(ids[1:3]) == {"researcher-1", "writer-2"}
        assert ids[3] == "supervisor-2"
        assert events[-2].usage.total_tokens == 4 * 18

        (first, second) = requests_of(fake, "planner")
        assert tool_names(first) == {"researcher", "writer"}
        assert requests_of(fake, "researcher")[0]["messages"][-1]["content"] == "find facts"
        results = {
            m["tool_call_id"]: m["content"] for m in second["messages"] if m["role"] == "tool"
        }
        assert results == {
            "call_0": "researcher says: find facts",
            "call_1": "writer says: draft it",
        }
        assert finished[-1].text.startswith("planner says: ")


async def test_a_supervisor_past_its_delegations_gets_error_results_and_answers() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        fake.first["planner"] = [
            calls(("researcher", {"task": "a"}), ("writer", {"task": "b"})),
            calls(("researcher", {"task": "c"}), ("writer", {"task": "d"})),
        ]
        fake.first["writer"] = [Scenario(status=400)]
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        answer = await stub.Invoke(pb.InvokeRequest(agent="lead", messages=[user("go")]))

        planner = requests_of(fake, "planner")
        assert len(planner) == 3
        # Turn 2 saw the writer's failure as an error result, not a failed run.
        results = [m["content"] for m in planner[1]["messages"] if m["role"] == "tool"]
        assert results[0] == "researcher says: a"
        assert results[1].startswith("error: ")
        # Turn 2 asked for two more with one left: the second was not run.
        results = [m["content"] for m in planner[2]["messages"] if m["role"] == "tool"]
        assert results[-1].startswith("error: not run: this workflow's max_delegations (3)")
        assert "tools" not in planner[2]  # none left: it answers
        assert calls_by_agent(fake) == {"planner": 3, "researcher": 2, "writer": 1}
        assert answer.message.content[0].text.startswith("planner says:")


def test_delegating_workflows_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.yaml"
    base = agents_yaml("http://127.0.0.1:9", "a", "b", "a.b", "a_b")
    path.write_text(base + "workflows:\n  w: {kind: supervisor, supervisor: a, agents: [a, b]}\n")
    with pytest.raises(ConfigError, match=r"workflows\.w\.agents: the supervisor 'a' is one"):
        load(path, {})
    path.write_text(base + "workflows:\n  w: {kind: handoff, start: a, agents: [a.b, a_b]}\n")
    with pytest.raises(ConfigError, match=r"agents\[1\]: 'a_b' and 'a.b' make the same tool"):
        load(path, {})


async def test_a_supervisor_killed_mid_delegation_resumes_without_asking_again(
    tmp_path: Path,
) -> None:
    async with AgentsFake() as fake:
        fake.first["planner"] = [calls(("researcher", {"task": "dig"}))]
        fake.first["researcher"] = [Scenario(hang=True)]
        path = write_config(tmp_path, fake.base_url, WORKFLOWS, *AGENTS)
        async with server(path) as first:
            with stub_for(first.port) as stub:
                call = stub.Stream(pb.StreamRequest(agent="lead", messages=[user("go")]))
                run_id = (await call.read()).start.run_id
                await wait_for(lambda: "researcher" in calls_by_agent(fake), what="delegation")
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait()
                call.cancel()
        async with server(path) as second:
            events = await follow(second.port, run_id)
    finished = [
        e.workflow_step_finish.step.step_id for e in events if e.HasField("workflow_step_finish")
    ]
    assert finished == ["supervisor-1", "researcher-1", "supervisor-2"]
    # The supervisor's finished first turn was not asked again; the cut-off delegation was.
    assert calls_by_agent(fake) == {"planner": 2, "researcher": 2}
