"""Workflows end to end: the real server in-process, the real OpenAI SDK against the fake
upstream, called through Invoke and Stream like agents."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from dbos import DBOS
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc

from service.config import ConfigError, load
from tests.chain_helpers import make_keys
from tests.fakes.openai_fake import Scenario
from tests.harness import serve_config
from tests.waiting import wait_for
from tests.workflow_rig import AgentsFake, agents_yaml, calls_by_agent, user

WORKFLOWS = """
workflows:
  brief:
    kind: sequential
    description: research, then write
    steps:
      - {id: research, agent: researcher, memory_write: findings}
      - {id: draft, agent: writer, input: "Task: {input} / notes: {previous}"}
      - {id: check, agent: editor, input: "{steps.research} | {previous}", memory_read: false}
  panel:
    kind: parallel
    branches:
      - {id: pro, agent: optimist}
      - {id: con, agent: critic, input: "Attack: {input}", on_failure: continue}
    merge: {agent: judge}
  joined:
    kind: parallel
    branches:
      - {id: pro, agent: optimist}
      - {id: con, agent: critic}
    merge: {concat: true, separator: " || "}
  short:
    kind: sequential
    limits: {max_steps: 2}
    steps:
      - {agent: researcher}
      - {agent: writer}
      - {agent: editor}
"""
AGENTS = ("researcher", "writer", "editor", "optimist", "critic", "judge")


def config(fake: AgentsFake, extra: str = "") -> str:
    return agents_yaml(fake.base_url, *AGENTS) + WORKFLOWS + extra


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def system_of(fake: AgentsFake, agent: str) -> list[list[dict[str, str]]]:
    """The messages each upstream request of ``agent`` carried."""
    return [r.body["messages"] for r in fake.received if r.body["messages"][0]["content"] == agent]


async def test_a_sequential_workflow_through_invoke_and_stream() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        answer = await stub.Invoke(pb.InvokeRequest(agent="brief", messages=[user("cats")]))
        steps = list(answer.workflow_steps)
        assert [s.step_id for s in steps] == ["research", "draft", "check"]
        assert steps[0].text == "researcher says: cats"
        assert steps[1].text == "writer says: Task: cats / notes: researcher says: cats"
        assert answer.message.content[0].text == steps[2].text
        assert steps[2].text.startswith("editor says: researcher says: cats | writer says")
        # Usage per step and in total; the run has an id.
        assert all(s.usage.total_tokens == 18 for s in steps)  # the fake's (12, 6) each
        assert answer.usage.total_tokens == 54
        assert answer.run_id.startswith("run_")
        # The writer read the run's memory (the researcher wrote it); the editor may not.
        writer = system_of(fake, "writer")[0]
        assert any("findings: researcher says: cats" in m["content"] for m in writer[1:-1])
        assert all("Shared memory" not in m["content"] for m in system_of(fake, "editor")[0])

        events = [
            e async for e in stub.Stream(pb.StreamRequest(agent="brief", messages=[user("dogs")]))
        ]
        kinds = [e.WhichOneof("event") for e in events]
        assert kinds[0] == "start"
        assert events[0].start.run_id.startswith("run_")
        assert kinds[-2:] == ["usage", "finish"]
        assert kinds.count("workflow_step_start") == kinds.count("workflow_step_finish") == 3
        by_step: dict[str, str] = {}
        for event in events:
            if event.HasField("text_delta"):
                by_step[event.text_delta.step_id] = (
                    by_step.get(event.text_delta.step_id, "") + event.text_delta.text
                )
        finished = [
            e.workflow_step_finish.step for e in events if e.HasField("workflow_step_finish")
        ]
        assert {s.step_id: s.text for s in finished} == by_step
        assert events[-2].usage.total_tokens == 54


async def test_a_parallel_workflow_merges_and_a_branch_may_fail_without_failing_it() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        answer = await stub.Invoke(pb.InvokeRequest(agent="panel", messages=[user("tea")]))
        steps = {s.step_id: s for s in answer.workflow_steps}
        assert set(steps) == {"pro", "con", "merge"}
        assert steps["con"].text == "critic says: Attack: tea"
        judged = system_of(fake, "judge")[0][-1]["content"]
        assert "[pro]\noptimist says: tea" in judged
        assert "[con]\ncritic says: Attack: tea" in judged
        assert answer.message.content[0].text == steps["merge"].text

        joined = await stub.Invoke(pb.InvokeRequest(agent="joined", messages=[user("x")]))
        assert joined.message.content[0].text == "optimist says: x || critic says: x"

        # The critic fails: "continue" merges without it, "fail" fails the run.
        fake.answers["critic"] = Scenario(status=400)
        answer = await stub.Invoke(pb.InvokeRequest(agent="panel", messages=[user("tea")]))
        steps = {s.step_id: s for s in answer.workflow_steps}
        assert steps["con"].error_reason == "UPSTREAM_INVALID_REQUEST"
        assert "[con]" not in system_of(fake, "judge")[-1][-1]["content"]
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Invoke(pb.InvokeRequest(agent="joined", messages=[user("x")]))
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(failed.value) == "UPSTREAM_INVALID_REQUEST"


async def test_limits_end_a_run_with_a_clear_status() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        with pytest.raises(grpc.aio.AioRpcError) as over:
            await stub.Invoke(pb.InvokeRequest(agent="short", messages=[user("x")]))
        assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(over.value) == "WORKFLOW_LIMIT"
        assert "max_steps" in (over.value.details() or "")
        assert calls_by_agent(fake) == {"researcher": 1, "writer": 1}


def test_a_workflow_past_its_fan_out_or_naming_no_agent_is_refused_at_load(
    tmp_path: Path,
) -> None:
    path = tmp_path / "switchboard.yaml"
    base = agents_yaml("http://127.0.0.1:9", "a")
    path.write_text(
        base + "workflows:\n  w: {kind: parallel, limits: {max_fan_out: 1}, branches: "
        "[{id: x, agent: a}, {id: y, agent: a}]}\n"
    )
    with pytest.raises(ConfigError, match=r"workflows\.w\.branches: 2 branches, over"):
        load(path, {})
    path.write_text(base + "workflows:\n  w: {kind: sequential, steps: [{agent: nobody}]}\n")
    with pytest.raises(ConfigError, match=r"workflows\.w\.steps\[0\]\.agent: no agent named"):
        load(path, {})
    path.write_text(
        base + "workflows:\n  w: {kind: sequential, steps: [{agent: a, input: '{steps.b}'}]}\n"
    )
    with pytest.raises(ConfigError, match=r"not an earlier step"):
        load(path, {})


async def test_workflows_are_listed_with_their_kind() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        listed = {a.name: a.kind for a in (await stub.ListAgents(pb.ListAgentsRequest())).agents}
        assert listed["brief"] == pb.AGENT_KIND_SEQUENTIAL
        assert listed["panel"] == pb.AGENT_KIND_PARALLEL
        assert listed["writer"] == pb.AGENT_KIND_AGENT
        got = await stub.GetAgent(pb.GetAgentRequest(name="brief"))
        assert got.agent.description == "research, then write"


async def test_cancelling_the_caller_cancels_every_branch() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        fake.answers["optimist"] = fake.answers["critic"] = Scenario(hang=True)
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        call = stub.Stream(pb.StreamRequest(agent="panel", messages=[user("x")]))
        run_id = (await call.read()).start.run_id
        await wait_for(lambda: len(fake.received) == 2, what="both branches upstream")
        call.cancel()
        await wait_for(lambda: fake.abandoned == 2, what="both upstream calls dropped")
        status = await DBOS.get_workflow_status_async(run_id)
        assert status is not None
        assert status.status == "CANCELLED"
        # Durably too: no branch is left pending for a restart to resume.
        branches = await DBOS.list_workflows_async(parent_workflow_id=run_id)
        assert [b.status for b in branches] == ["CANCELLED", "CANCELLED"]
        assert "judge" not in calls_by_agent(fake)


async def test_an_invoke_retried_with_its_request_id_reattaches_to_its_run() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        request = pb.InvokeRequest(agent="brief", messages=[user("x")], request_id="order-7")
        first = await stub.Invoke(request)
        again = await stub.Invoke(request)
        assert again.run_id == first.run_id
        assert calls_by_agent(fake) == {"researcher": 1, "writer": 1, "editor": 1}


async def test_a_tenant_never_sees_another_tenants_run(tmp_path: Path) -> None:
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",)), ("globex", ("*",))])
    async with AgentsFake() as fake:
        auth = f"auth: {{enabled: true, keys_file: {keys_file}}}\n"
        async with serve_config(config(fake, auth)) as served:
            stub = agent_pb2_grpc.AgentServiceStub(served.channel)
            acme = [("authorization", f"Bearer {keys[0]}")]
            globex = [("authorization", f"Bearer {keys[1]}")]
            answer = await stub.Invoke(
                pb.InvokeRequest(agent="brief", messages=[user("x")]), metadata=acme
            )
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                async for _ in stub.Stream(pb.StreamRequest(run_id=answer.run_id), metadata=globex):
                    pass
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
            events = [
                e async for e in stub.Stream(pb.StreamRequest(run_id=answer.run_id), metadata=acme)
            ]
            assert events[-1].HasField("finish")
            texts = [e.text_delta.text for e in events if e.HasField("text_delta")]
            assert texts[-1] == answer.message.content[0].text


async def test_a_reload_that_adds_the_first_workflow_is_refused_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DBOS starts with the server: a server started without workflows keeps its config and
    says a restart is needed (the workflow is never silently unserved)."""
    async with AgentsFake() as fake, serve_config(agents_yaml(fake.base_url, *AGENTS)) as served:
        served.path.write_text(config(fake))
        assert await served.app.reload() is False
        assert "adding the first one needs a restart" in caplog.text
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Invoke(pb.InvokeRequest(agent="brief", messages=[user("x")]))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
