"""Runs parked for approval past their caller's deadline: tenant-scoped RunService, a run
resumed on another replica on shared state, and a run that waits through a server restart
(subprocess servers on one PostgreSQL / one SQLite file)."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc, approval_pb2, approval_pb2_grpc, run_pb2, run_pb2_grpc

from service.auth.keys import new_key, write_keys_file
from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.conftest import DEFAULT_CONFIG
from tests.harness import for_tests, serve_config
from tests.state.test_replicas import Replica, _running

pytestmark = pytest.mark.asyncio

CONFIG = f"""
server: {{grace_s: 1}}
auth: {{enabled: false}}
targets:
  mock-compose: {{provider: mock, model: compose}}
mcp_servers:
  demo:
    transport: stdio
    command: [python, mcp_demo_server.py]
    cwd: '{DEFAULT_CONFIG.parent}'
    trust_read_only_hint: true
    tools:
      add_note: {{class: write, approval: always, timeout_s: 5}}
  strict:
    transport: stdio
    command: [python, mcp_demo_server.py]
    cwd: '{DEFAULT_CONFIG.parent}'
    tools:
      add_note: {{class: write, approval: always, on_deny: fail}}
agents:
  strict:
    route: [mock-compose]
    server_tools: [strict.add_note]
  operator:
    route: [mock-compose]
    server_tools: [demo.*]
    loop: {{max_steps: 6}}
"""


def ask(text: str) -> pb.InvokeRequest:
    return pb.InvokeRequest(
        agent="operator",
        messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])],
    )


NOTE = 'call add_note {"text": "parked"}'
Metadata = Sequence[tuple[str, str]]


async def park(channel: grpc.aio.Channel, metadata: Metadata = ()) -> pb.InvokeResponse:
    """An Invoke whose write call waits past its short deadline: parked."""
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    parked = await stub.Invoke(ask(NOTE), timeout=2.5, metadata=metadata)
    assert parked.finish_reason == pb.FINISH_REASON_APPROVAL_PENDING
    assert parked.run_id
    return parked


def approval_id(parked: pb.InvokeResponse) -> str:
    return parked.steps[-1].approvals[0].approval_id


async def test_runs_are_tenant_scoped_and_a_cancelled_run_does_not_resume(
    tmp_path: Path,
) -> None:
    acme_key, acme = new_key("acme", scopes=["approver"])
    globex_key, globex = new_key("globex", scopes=["approver"])
    keys = tmp_path / "keys.yaml"
    write_keys_file(keys, [acme, globex])
    config = CONFIG.replace(
        "auth: {enabled: false}", f"auth: {{enabled: true, keys_file: '{keys}'}}"
    )
    async with serve_config(config) as served:
        mine = (("authorization", f"Bearer {acme_key}"),)
        theirs = (("authorization", f"Bearer {globex_key}"),)
        parked = await park(served.channel, mine)
        runs = run_pb2_grpc.RunServiceStub(served.channel)
        for call in (
            runs.GetRun(run_pb2.GetRunRequest(id=parked.run_id), metadata=theirs),
            runs.ResumeRun(run_pb2.ResumeRunRequest(id=parked.run_id), metadata=theirs),
            runs.CancelRun(run_pb2.CancelRunRequest(id=parked.run_id), metadata=theirs),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        stream = agent_pb2_grpc.AgentServiceStub(served.channel).Stream(
            pb.StreamRequest(run_id=parked.run_id), metadata=theirs
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stream:
                pass
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert not (await runs.ListRuns(run_pb2.ListRunsRequest(), metadata=theirs)).runs
        listed = await runs.ListRuns(
            run_pb2.ListRunsRequest(state=run_pb2.Run.STATE_WAITING, kind="agent"), metadata=mine
        )
        assert [r.id for r in listed.runs] == [parked.run_id]
        cancelled = await runs.CancelRun(run_pb2.CancelRunRequest(id=parked.run_id), metadata=mine)
        assert cancelled.run.state == run_pb2.Run.STATE_CANCELLED
        approvals = approval_pb2_grpc.ApprovalServiceStub(served.channel)
        got = await approvals.GetApproval(
            approval_pb2.GetApprovalRequest(id=approval_id(parked)), metadata=mine
        )
        assert got.approval.state == approval_pb2.Approval.STATE_EXPIRED
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await runs.ResumeRun(run_pb2.ResumeRunRequest(id=parked.run_id), metadata=mine)
        assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "cancelled" in (ended.value.details() or "")


@pytest.mark.system
async def test_an_approval_on_one_replica_resumes_a_run_parked_on_another(
    tmp_path: Path,
) -> None:
    async with postgres_schema() as schema, redis_prefix() as prefix:
        config = tmp_path / "switchboard.yaml"
        config.write_text(for_tests(textwrap.dedent(CONFIG) + shared_state_yaml(schema, prefix)))
        a, b = Replica(config, tmp_path, "a"), Replica(config, tmp_path, "b")
        with _running(a, b):
            a.start()
            b.start()
            await asyncio.gather(a.ready(90), b.ready(90))
            async with (
                grpc.aio.insecure_channel(a.address) as on_a,
                grpc.aio.insecure_channel(b.address) as on_b,
            ):
                # Waiting within its deadline on A; decided on B: A runs the tool.
                stream = agent_pb2_grpc.AgentServiceStub(on_a).Stream(
                    pb.StreamRequest(
                        agent="operator",
                        messages=[
                            pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=NOTE)])
                        ],
                    ),
                    timeout=60,
                )
                outcomes = []
                async for event in stream:
                    if event.WhichOneof("event") == "approval_required":
                        await approval_pb2_grpc.ApprovalServiceStub(on_b).Approve(
                            approval_pb2.ApproveRequest(id=event.approval_required.approval_id)
                        )
                    if event.WhichOneof("event") == "tool_result":
                        outcomes.append(event.tool_result.outcome)
                assert outcomes == [pb.TOOL_OUTCOME_OK]
                # Parked by A past its deadline; approved and resumed on B.
                parked = await park(on_a)
                await approval_pb2_grpc.ApprovalServiceStub(on_b).Approve(
                    approval_pb2.ApproveRequest(id=approval_id(parked))
                )
                resumed = await run_pb2_grpc.RunServiceStub(on_b).ResumeRun(
                    run_pb2.ResumeRunRequest(id=parked.run_id), timeout=60
                )
                assert resumed.run.state == run_pb2.Run.STATE_SUCCEEDED
                assert resumed.response.finish_reason == pb.FINISH_REASON_STOP
                results = resumed.response.steps[0].tool_results
                assert [r.outcome for r in results] == [pb.TOOL_OUTCOME_OK]
                # B's own demo server (notes live per process) saved it: it ran on B.
                assert results[0].preview == "saved note 1"


@pytest.mark.system
async def test_a_run_waits_through_a_server_restart(tmp_path: Path) -> None:
    config = tmp_path / "switchboard.yaml"
    state = f"state: {{backend: embedded, data_dir: '{tmp_path / 'data'}'}}\n"
    config.write_text(for_tests(textwrap.dedent(CONFIG) + state))
    server = Replica(config, tmp_path, "server")
    with _running(server):
        server.start()
        await server.ready(90)
        async with grpc.aio.insecure_channel(server.address) as channel:
            parked = await park(channel)
            # A second call is waiting within its deadline when the server dies.
            stream = agent_pb2_grpc.AgentServiceStub(channel).Stream(
                pb.StreamRequest(
                    agent="operator",
                    messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=NOTE)])],
                ),
                timeout=4,
            )
            async for event in stream:
                if event.WhichOneof("event") == "approval_required":
                    waiting = event.approval_required
                    break
            server.kill()
        server.start()
        await server.ready(90)
        async with grpc.aio.insecure_channel(server.address) as channel:
            approvals = approval_pb2_grpc.ApprovalServiceStub(channel)
            runs = run_pb2_grpc.RunServiceStub(channel)
            for approval in (approval_id(parked), waiting.approval_id):
                await approvals.Approve(approval_pb2.ApproveRequest(id=approval))
            resumed = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=parked.run_id), timeout=60)
            assert resumed.run.state == run_pb2.Run.STATE_SUCCEEDED
            assert resumed.response.steps[0].tool_results[0].outcome == pb.TOOL_OUTCOME_OK
            # The killed holder's lease (its deadline and a margin) passes, then it resumes.
            limit = time.monotonic() + 30
            while True:
                try:
                    again = await runs.ResumeRun(
                        run_pb2.ResumeRunRequest(id=waiting.run_id), timeout=60
                    )
                    break
                except grpc.aio.AioRpcError as busy:
                    code = busy.code()
                assert code == grpc.StatusCode.FAILED_PRECONDITION
                assert time.monotonic() < limit, "the lease did not pass"
                await asyncio.sleep(0.25)
            assert again.run.state == run_pb2.Run.STATE_SUCCEEDED
            assert again.response.steps[0].tool_results[0].outcome == pb.TOOL_OUTCOME_OK


async def test_a_denied_call_whose_policy_says_fail_ends_the_run_permission_denied() -> None:
    async with serve_config(CONFIG) as served:
        stream = agent_pb2_grpc.AgentServiceStub(served.channel).Stream(
            pb.StreamRequest(
                agent="strict",
                messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=NOTE)])],
            ),
            timeout=60,
        )
        approvals = approval_pb2_grpc.ApprovalServiceStub(served.channel)
        asked: list[str] = []

        async def deny_when_asked() -> None:
            async for event in stream:
                if event.WhichOneof("event") == "approval_required":
                    asked.append(event.approval_required.run_id)
                    await approvals.Deny(
                        approval_pb2.DenyRequest(id=event.approval_required.approval_id)
                    )

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await deny_when_asked()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "on_deny is fail" in (refused.value.details() or "")
        got = await run_pb2_grpc.RunServiceStub(served.channel).GetRun(
            run_pb2.GetRunRequest(id=asked[0])
        )
        assert got.run.state == run_pb2.Run.STATE_FAILED
