"""The default config's operator agent: the demo MCP server shipped beside the config, on
the mock model, with no keys."""

from __future__ import annotations

import json

import grpc
import openai
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc, approval_pb2, approval_pb2_grpc, run_pb2, run_pb2_grpc

from tests.conftest import DEFAULT_CONFIG
from tests.harness import serve_config

pytestmark = pytest.mark.asyncio


def ask(text: str) -> pb.InvokeRequest:
    return pb.InvokeRequest(
        agent="operator",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])],
    )


async def test_demo_agent_runs_its_mcp_tools_and_keeps_the_write_tool_waiting() -> None:
    # The harness serves a copy of the file: the demo server's cwd points back at config/.
    environ = {"SWITCHBOARD_MCP_SERVERS__DEMO__CWD": str(DEFAULT_CONFIG.parent)}
    async with serve_config(DEFAULT_CONFIG.read_text(), environ) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        answer = await stub.Invoke(
            ask('call get_weather {"city": "Paris"} && call utc_time {}'), timeout=60
        )
        assert answer.message.content[0].text.startswith("The tool answered: Paris: 18°C")
        assert [r.outcome for r in answer.steps[0].tool_results] == [pb.TOOL_OUTCOME_OK] * 2
        # add_note is a write that needs approval: undecided before the deadline, the run
        # parks (OK status, FINISH_REASON_APPROVAL_PENDING and its run id); the tool has not run.
        note = await stub.Invoke(ask('call add_note {"text": "hello"}'), timeout=2.5)
        assert note.finish_reason == pb.FINISH_REASON_APPROVAL_PENDING
        assert note.run_id.startswith("run_")
        assert note.steps[0].approvals[0].tool == "add_note"
        assert not note.steps[0].tool_results
        runs = run_pb2_grpc.RunServiceStub(served.channel)
        got = (await runs.GetRun(run_pb2.GetRunRequest(id=note.run_id))).run
        assert got.state == run_pb2.Run.STATE_WAITING
        assert list(got.pending_approval_ids) == [note.steps[0].approvals[0].approval_id]
        listed = await stub.Invoke(ask("call list_notes {}"), timeout=60)
        assert listed.steps[0].tool_results[0].preview == "(no notes)"
        # Resumed before anyone decided, within a short deadline: it parks again.
        again = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=note.run_id), timeout=2.5)
        assert again.response.finish_reason == pb.FINISH_REASON_APPROVAL_PENDING
        assert again.run.state == run_pb2.Run.STATE_WAITING
        approvals = approval_pb2_grpc.ApprovalServiceStub(served.channel)
        await approvals.Deny(
            approval_pb2.DenyRequest(id=got.pending_approval_ids[0], comment="not today")
        )
        resumed = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=note.run_id), timeout=60)
        assert resumed.run.state == run_pb2.Run.STATE_SUCCEEDED
        assert resumed.response.finish_reason == pb.FINISH_REASON_STOP
        assert resumed.response.run_id == note.run_id
        assert [s.step for s in resumed.response.steps] == [1, 2]  # the whole run, replayed
        assert resumed.response.steps[0].tool_results[0].outcome == pb.TOOL_OUTCOME_DENIED
        # An ended run's answer again, with nothing run again.
        replayed = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=note.run_id), timeout=60)
        assert replayed.response.message == resumed.response.message
        assert replayed.response.usage == resumed.response.usage
        listed = await stub.Invoke(ask("call list_notes {}"), timeout=60)
        assert listed.steps[0].tool_results[0].preview == "(no notes)"
        page = await runs.ListRuns(run_pb2.ListRunsRequest())
        assert [r.id for r in page.runs] == [note.run_id]
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await runs.GetRun(run_pb2.GetRunRequest(id="run_" + "0" * 32))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await runs.CancelRun(run_pb2.CancelRunRequest(id=note.run_id))
        assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        agent = (await stub.GetAgent(pb.GetAgentRequest(name="operator"))).agent
        tools = {t.tool.name: t for t in agent.server_tools}
        assert sorted(tools) == ["add_note", "get_weather", "list_notes", "utc_time"]
        assert (tools["add_note"].tool_class, tools["add_note"].approval) == ("write", "always")
        assert tools["get_weather"].tool_class == "read_only"
        assert tools["add_note"].source == "mcp:demo"
        assert all(t.enabled for t in tools.values())
        assert agent.max_steps == 6


async def test_a_second_client_approves_with_edits_and_the_waiting_call_runs_the_tool() -> None:
    environ = {"SWITCHBOARD_MCP_SERVERS__DEMO__CWD": str(DEFAULT_CONFIG.parent)}
    async with serve_config(DEFAULT_CONFIG.read_text(), environ) as served:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        second = grpc.aio.insecure_channel(served.address)  # another client
        approvals = approval_pb2_grpc.ApprovalServiceStub(second)
        request = pb.StreamRequest(
            agent="operator",
            messages=[
                pb.Message(
                    role=pb.ROLE_USER,
                    content=[pb.ContentPart(text='call add_note {"text": "draft"}')],
                )
            ],
        )
        seen: list[str] = []
        results = []
        async for event in stub.Stream(request, timeout=60):
            kind = event.WhichOneof("event")
            seen.append(kind)
            if kind == "approval_required":
                asked = event.approval_required
                pending = await approvals.ListApprovals(
                    approval_pb2.ListApprovalsRequest(state=approval_pb2.Approval.STATE_PENDING)
                )
                assert [a.id for a in pending.approvals] == [asked.approval_id]
                assert pending.approvals[0].arguments_json == '{"text": "draft"}'
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await approvals.Approve(
                        approval_pb2.ApproveRequest(id=asked.approval_id, arguments_json="[1]")
                    )
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                # Edited arguments must fit the tool's schema (text is a string).
                with pytest.raises(grpc.aio.AioRpcError) as unfit:
                    await approvals.Approve(
                        approval_pb2.ApproveRequest(
                            id=asked.approval_id, arguments_json='{"text": 5}'
                        )
                    )
                assert unfit.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "schema" in (unfit.value.details() or "")
                decided = await approvals.Approve(
                    approval_pb2.ApproveRequest(
                        id=asked.approval_id, arguments_json='{"text": "final"}', comment="ok"
                    )
                )
                assert decided.approval.state == approval_pb2.Approval.STATE_APPROVED
                with pytest.raises(grpc.aio.AioRpcError) as twice:
                    await approvals.Deny(approval_pb2.DenyRequest(id=asked.approval_id))
                assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            if kind == "tool_result":
                results.append(event.tool_result)
        assert seen.index("approval_required") < seen.index("tool_result")
        assert [r.outcome for r in results] == [pb.TOOL_OUTCOME_OK]
        listed = await stub.Invoke(ask("call list_notes {}"), timeout=60)
        assert listed.steps[0].tool_results[0].preview == "final"
        await second.close()
        # The decision's audit entry carries the comment and the edit.
        audit = await served.app.stores.durable.recent_audit("default", 50)
        approved = [e for e in audit if e.action == "Approve"]
        assert len(approved) == 1
        asked_for = [e for e in audit if e.outcome == "approval_requested"]
        assert json.loads(asked_for[0].detail)["arguments_json"] == '{"text": "draft"}'
        assert json.loads(approved[0].detail) == {
            "tool": "add_note",
            "run_id": asked.run_id,
            "comment": "ok",
            "arguments_json": '{"text": "draft"}',
            "edited_arguments_json": '{"text": "final"}',
        }


async def test_the_openai_door_streams_no_tool_calls_the_server_ran() -> None:
    environ = {"SWITCHBOARD_MCP_SERVERS__DEMO__CWD": str(DEFAULT_CONFIG.parent)}
    async with serve_config(DEFAULT_CONFIG.read_text(), environ, http=True) as served:
        client = openai.AsyncOpenAI(
            base_url=served.http_url + "/v1", api_key="unused", max_retries=0, timeout=60
        )
        stream = await client.chat.completions.create(
            model="operator",
            messages=[{"role": "user", "content": 'call get_weather {"city": "Paris"}'}],
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        await client.close()
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    # The server ran get_weather: an OpenAI client must not see it as a call to make.
    assert not [d for d in deltas if d.tool_calls]
    assert "Paris: 18°C" in "".join(d.content or "" for d in deltas)
    assert chunks[-1].choices[0].finish_reason == "stop"
