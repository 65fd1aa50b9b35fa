"""A workflow step whose agent calls a tool that needs a person's approval: the run waits
durably (the step's tool loop parks at once, the workflow waits for the decision), a caller
whose deadline comes first gets FINISH_REASON_APPROVAL_PENDING and the run id, and after the
approval the run goes on from that step, also across a SIGKILL of the server. The fake
upstream and the HTTP tool count their calls: each finished call ran once."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from pathlib import Path

import grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc, approval_pb2, approval_pb2_grpc, run_pb2, run_pb2_grpc

from tests.fakes.openai_fake import FakeToolCall, Scenario
from tests.harness import serve_config
from tests.tools.rig import http_tool_server
from tests.waiting import wait_for
from tests.workflow_rig import AgentsFake, calls_by_agent, server, user

ORDER = Scenario(tool_calls=(FakeToolCall("order", '{"item": "tea"}', id="call_1"),))


def config(base_url: str, tool_url: str) -> str:
    return textwrap.dedent(f"""\
        targets:
          fake: {{provider: openai_compatible, model: fake-model, base_url: {base_url}/v1}}
        http_tools:
          order:
            description: Place an order.
            method: POST
            url: {tool_url}/orders
            parameters:
              type: object
              properties: {{item: {{type: string}}}}
              required: [item]
            class: write
            approval: always
        agents:
          researcher: {{system_prompt: researcher, route: [fake]}}
          clerk: {{system_prompt: clerk, route: [fake], server_tools: [order]}}
          editor: {{system_prompt: editor, route: [fake]}}
        workflows:
          pair:
            kind: parallel
            branches:
              - {{id: left, agent: clerk}}
              - {{id: right, agent: clerk}}
            merge: {{concat: true}}
          panel:
            kind: parallel
            branches:
              - {{id: look, agent: researcher}}
              - {{id: act, agent: clerk}}
            merge: {{agent: editor}}
          buy:
            kind: sequential
            steps:
              - {{id: research, agent: researcher}}
              - {{id: act, agent: clerk}}
              - {{id: check, agent: editor}}
        """)


def step_ids(response: pb.InvokeResponse) -> list[str]:
    return [s.step_id for s in response.workflow_steps]


async def test_a_caller_gets_approval_pending_and_the_run_goes_on_once_approved() -> None:
    async with AgentsFake() as fake, http_tool_server() as tool:
        fake.first["clerk"] = [ORDER]
        async with serve_config(config(fake.base_url, tool.url)) as served:
            agents = agent_pb2_grpc.AgentServiceStub(served.channel)
            runs = run_pb2_grpc.RunServiceStub(served.channel)
            request = pb.InvokeRequest(agent="buy", messages=[user("tea")])
            parked = await agents.Invoke(request, timeout=4)
            assert parked.finish_reason == pb.FINISH_REASON_APPROVAL_PENDING
            assert step_ids(parked) == ["research"]
            # The caller's call ended; the run did not: it waits for a person.
            got = await runs.GetRun(run_pb2.GetRunRequest(id=parked.run_id))
            assert got.run.state == run_pb2.Run.STATE_WAITING
            (approval,) = got.run.pending_approval_ids
            assert tool.seen == []

            await approval_pb2_grpc.ApprovalServiceStub(served.channel).Approve(
                approval_pb2.ApproveRequest(id=approval)
            )
            done = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=parked.run_id), timeout=60)
            assert done.run.state == run_pb2.Run.STATE_SUCCEEDED
            assert done.run.pending_approval_ids == []
            assert step_ids(done.response) == ["research", "act", "check"]
            assert done.response.workflow_steps[1].text.startswith("clerk says:")
            assert done.response.finish_reason == pb.FINISH_REASON_STOP
            assert calls_by_agent(fake) == {"researcher": 1, "clerk": 2, "editor": 1}
            assert [s["body"] for s in tool.seen] == [{"item": "tea"}]


async def test_a_parallel_branch_waits_for_its_approval_and_the_merge_runs_after() -> None:
    async with AgentsFake() as fake, http_tool_server() as tool:
        fake.first["clerk"] = [ORDER]
        async with serve_config(config(fake.base_url, tool.url)) as served:
            agents = agent_pb2_grpc.AgentServiceStub(served.channel)
            runs = run_pb2_grpc.RunServiceStub(served.channel)
            request = pb.InvokeRequest(agent="panel", messages=[user("tea")])
            began = time.monotonic()
            parked = await agents.Invoke(request, timeout=3)
            assert parked.finish_reason == pb.FINISH_REASON_APPROVAL_PENDING
            assert step_ids(parked) == ["look"]
            await _until_waiting(runs, parked.run_id)
            got = await runs.GetRun(run_pb2.GetRunRequest(id=parked.run_id))
            (approval,) = got.run.pending_approval_ids
            # Decided past the deadline the run began with (the caller's): the decision
            # renews it, for the branch and for the merge after it.
            while time.monotonic() < began + 3.5:
                await asyncio.sleep(0.05)
            await approval_pb2_grpc.ApprovalServiceStub(served.channel).Approve(
                approval_pb2.ApproveRequest(id=approval)
            )
            done = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=parked.run_id), timeout=60)
            assert done.run.state == run_pb2.Run.STATE_SUCCEEDED
            assert step_ids(done.response) == ["look", "act", "merge"]
            assert done.response.message.content[0].text.startswith("editor says:")
            assert calls_by_agent(fake) == {"researcher": 1, "clerk": 2, "editor": 1}
            assert len(tool.seen) == 1


async def test_two_branches_wait_at_once_and_the_run_lists_both_approvals() -> None:
    async with AgentsFake() as fake, http_tool_server() as tool:
        fake.first["clerk"] = [ORDER, ORDER]
        async with serve_config(config(fake.base_url, tool.url)) as served:
            runs = run_pb2_grpc.RunServiceStub(served.channel)
            call = agent_pb2_grpc.AgentServiceStub(served.channel).Stream(
                pb.StreamRequest(agent="pair", messages=[user("tea")]), timeout=60
            )
            run_id, asked = "", []
            async for event in call:
                if event.HasField("start"):
                    run_id = event.start.run_id
                if event.HasField("approval_required"):
                    asked.append(event.approval_required.approval_id)
                    if len(asked) == 2:
                        break
            limit = time.monotonic() + 20
            while (
                len((await runs.GetRun(run_pb2.GetRunRequest(id=run_id))).run.pending_approval_ids)
                < 2
            ):
                assert time.monotonic() < limit, "the run never listed both approvals"
                await asyncio.sleep(0.05)
            got = await runs.GetRun(run_pb2.GetRunRequest(id=run_id))
            assert got.run.state == run_pb2.Run.STATE_WAITING
            assert sorted(got.run.pending_approval_ids) == sorted(asked)
            approvals = approval_pb2_grpc.ApprovalServiceStub(served.channel)
            for approval in asked:
                await approvals.Approve(approval_pb2.ApproveRequest(id=approval))
            events = [e async for e in call]
            assert events[-1].finish.finish_reason == pb.FINISH_REASON_STOP
            done = await runs.GetRun(run_pb2.GetRunRequest(id=run_id))
            assert done.run.state == run_pb2.Run.STATE_SUCCEEDED
            assert done.run.pending_approval_ids == []
            assert len(tool.seen) == 2


async def test_a_run_parked_for_approval_survives_a_sigkill_and_completes_once(
    tmp_path: Path,
) -> None:
    async with AgentsFake() as fake, http_tool_server() as tool:
        fake.first["clerk"] = [ORDER]
        path = tmp_path / "switchboard.yaml"
        path.write_text(
            config(fake.base_url, tool.url)
            + f"state: {{backend: embedded, data_dir: {tmp_path / 'data'}}}\n"
            + "auth: {enabled: false}\n"
        )
        run_id = approval = ""
        async with (
            server(path) as first,
            grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel,
        ):
            call = agent_pb2_grpc.AgentServiceStub(channel).Stream(
                pb.StreamRequest(agent="buy", messages=[user("tea")]), timeout=60
            )
            async for event in call:
                if event.HasField("start"):
                    run_id = event.start.run_id
                if event.HasField("approval_required"):
                    approval = event.approval_required.approval_id
                    break
            await _until_waiting(run_pb2_grpc.RunServiceStub(channel), run_id)
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait()
            call.cancel()
        assert run_id.startswith("run_")
        assert approval.startswith("apr_")
        async with (
            server(path) as second,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel,
        ):
            runs = run_pb2_grpc.RunServiceStub(channel)
            still = await runs.GetRun(run_pb2.GetRunRequest(id=run_id))
            assert still.run.state == run_pb2.Run.STATE_WAITING
            assert list(still.run.pending_approval_ids) == [approval]
            await approval_pb2_grpc.ApprovalServiceStub(channel).Approve(
                approval_pb2.ApproveRequest(id=approval)
            )
            try:
                done = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=run_id), timeout=60)
            except Exception:
                print(second.output[-6000:])
                raise
        assert done.run.state == run_pb2.Run.STATE_SUCCEEDED
        assert step_ids(done.response) == ["research", "act", "check"]
        # Every finished call ran once: the model's call that asked, the tool, the answer.
        assert calls_by_agent(fake) == {"researcher": 1, "clerk": 2, "editor": 1}
        assert [s["body"] for s in tool.seen] == [{"item": "tea"}]


async def _until_waiting(runs: run_pb2_grpc.RunServiceStub, run_id: str) -> None:
    """Return once the run is WAITING (a bounded wait on the condition)."""
    limit = time.monotonic() + 20
    while (await runs.GetRun(run_pb2.GetRunRequest(id=run_id))).run.state != (
        run_pb2.Run.STATE_WAITING
    ):
        assert time.monotonic() < limit, "the run never waited for its approval"
        await asyncio.sleep(0.05)


async def test_a_kill_during_the_resumed_step_takes_it_back_at_once_after_a_restart(
    tmp_path: Path,
) -> None:
    async with AgentsFake() as fake, http_tool_server() as tool:
        # The clerk asks for the order; once approved, the tool runs and its answer hangs.
        fake.first["clerk"] = [ORDER, Scenario(hang=True)]
        path = tmp_path / "switchboard.yaml"
        path.write_text(
            config(fake.base_url, tool.url)
            + f"state: {{backend: embedded, data_dir: {tmp_path / 'data'}}}\n"
            + "auth: {enabled: false}\n"
        )
        run_id = ""
        async with (
            server(path) as first,
            grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel,
        ):
            call = agent_pb2_grpc.AgentServiceStub(channel).Stream(
                pb.StreamRequest(agent="buy", messages=[user("tea")]), timeout=120
            )
            async for event in call:
                if event.HasField("start"):
                    run_id = event.start.run_id
                if event.HasField("approval_required"):
                    await approval_pb2_grpc.ApprovalServiceStub(channel).Approve(
                        approval_pb2.ApproveRequest(id=event.approval_required.approval_id)
                    )
                    break
            await wait_for(lambda: calls_by_agent(fake).get("clerk") == 2, what="the answer")
            assert len(tool.seen) == 1
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait()
            call.cancel()
        async with (
            server(path) as second,
            grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel,
        ):
            runs = run_pb2_grpc.RunServiceStub(channel)
            try:
                # Well within the killed step's lease (its deadline, the workflow's 600 s).
                done = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=run_id), timeout=60)
            except Exception:
                print(second.output[-6000:])
                raise
        assert done.run.state == run_pb2.Run.STATE_SUCCEEDED
        assert step_ids(done.response) == ["research", "act", "check"]
        # The cut-off answer was asked again; the tool, already run and saved, was not.
        assert calls_by_agent(fake) == {"researcher": 1, "clerk": 3, "editor": 1}
        assert len(tool.seen) == 1
