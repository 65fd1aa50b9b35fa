"""RunService for workflow runs: GetRun, ListRuns (tenant-scoped, paged, filtered), CancelRun
and ResumeRun, through the real server against the fake upstream."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc, run_pb2, run_pb2_grpc

from tests.chain_helpers import make_keys
from tests.fakes.openai_fake import Scenario
from tests.harness import serve_config
from tests.test_workflows import config, reason_of
from tests.waiting import wait_for
from tests.workflow_rig import AgentsFake, calls_by_agent, user

Metadata = list[tuple[str, str]]


async def test_runs_are_listed_newest_first_per_tenant_with_their_state(tmp_path: Path) -> None:
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",)), ("globex", ("*",))])
    acme: Metadata = [("authorization", f"Bearer {keys[0]}")]
    globex: Metadata = [("authorization", f"Bearer {keys[1]}")]
    async with AgentsFake() as fake:
        auth = f"auth: {{enabled: true, keys_file: {keys_file}}}\n"
        async with serve_config(config(fake, auth)) as served:
            agents = agent_pb2_grpc.AgentServiceStub(served.channel)
            runs = run_pb2_grpc.RunServiceStub(served.channel)
            started = []
            for text in ("one", "two", "three"):
                request = pb.InvokeRequest(agent="brief", messages=[user(text)], request_id=text)
                started.append((await agents.Invoke(request, metadata=acme)).run_id)
            fake.answers["critic"] = Scenario(status=400)
            with pytest.raises(grpc.aio.AioRpcError):
                await agents.Invoke(
                    pb.InvokeRequest(agent="joined", messages=[user("x")]), metadata=acme
                )
            theirs = await agents.Invoke(
                pb.InvokeRequest(agent="brief", messages=[user("x")]), metadata=globex
            )

            first = await runs.ListRuns(run_pb2.ListRunsRequest(page_size=2), metadata=acme)
            assert [r.name for r in first.runs] == ["joined", "brief"]
            failed, newest = first.runs
            assert failed.state == run_pb2.Run.STATE_FAILED
            assert failed.error == (
                "target 'fake': the upstream rejected the request: fake error 400"
            )
            assert newest.id == started[2]
            assert newest.state == run_pb2.Run.STATE_SUCCEEDED
            assert (newest.kind, newest.steps, newest.request_id) == ("workflow", 3, "three")
            assert newest.update_time.ToNanoseconds() >= newest.create_time.ToNanoseconds()
            rest = await runs.ListRuns(
                run_pb2.ListRunsRequest(page_size=2, page_token=first.next_page_token),
                metadata=acme,
            )
            assert [r.id for r in rest.runs] == [started[1], started[0]]
            assert rest.next_page_token == ""
            done = await runs.ListRuns(
                run_pb2.ListRunsRequest(state=run_pb2.Run.STATE_SUCCEEDED, kind="workflow"),
                metadata=acme,
            )
            assert [r.id for r in done.runs] == started[::-1]

            # Another tenant's runs are not there, and not found by id.
            mine = await runs.ListRuns(run_pb2.ListRunsRequest(), metadata=globex)
            assert [r.id for r in mine.runs] == [theirs.run_id]
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await runs.GetRun(run_pb2.GetRunRequest(id=started[0]), metadata=globex)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
            assert reason_of(hidden.value) == "RUN_NOT_FOUND"
            with pytest.raises(grpc.aio.AioRpcError) as hidden:
                await runs.CancelRun(run_pb2.CancelRunRequest(id=started[0]), metadata=globex)
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
            got = await runs.GetRun(run_pb2.GetRunRequest(id=started[0]), metadata=acme)
            assert got.run.state == run_pb2.Run.STATE_SUCCEEDED

            # Bad requests say what is wrong.
            for bad in (
                run_pb2.ListRunsRequest(kind="robot"),
                run_pb2.ListRunsRequest(page_token="nope"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await runs.ListRuns(bad, metadata=acme)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await runs.CancelRun(run_pb2.CancelRunRequest(id=started[0]), metadata=acme)
            assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert reason_of(ended.value) == "RUN_ENDED"


async def test_cancel_run_stops_every_branch_and_resume_run_finishes_it() -> None:
    async with AgentsFake() as fake, serve_config(config(fake)) as served:
        fake.first["optimist"] = [Scenario(hang=True)]
        fake.first["critic"] = [Scenario(hang=True)]
        agents = agent_pb2_grpc.AgentServiceStub(served.channel)
        runs = run_pb2_grpc.RunServiceStub(served.channel)
        call = agents.Stream(pb.StreamRequest(agent="panel", messages=[user("x")]))
        run_id = (await call.read()).start.run_id
        await wait_for(lambda: len(fake.received) == 2, what="both branches upstream")
        running = await runs.GetRun(run_pb2.GetRunRequest(id=run_id))
        assert running.run.state == run_pb2.Run.STATE_RUNNING

        cancelled = await runs.CancelRun(run_pb2.CancelRunRequest(id=run_id))
        assert cancelled.run.state == run_pb2.Run.STATE_CANCELLED
        await wait_for(lambda: fake.abandoned == 2, what="both upstream calls dropped")
        # The caller following it is told why its answer will not come.
        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            await _to_the_end(call)
        assert stopped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(stopped.value) == "RUN_CANCELLED"

        resumed = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=run_id), timeout=60)
        assert resumed.run.state == run_pb2.Run.STATE_SUCCEEDED
        assert resumed.response.run_id == run_id
        assert {s.step_id for s in resumed.response.workflow_steps} == {"pro", "con", "merge"}
        assert resumed.response.message.content[0].text.startswith("judge says:")
        assert calls_by_agent(fake) == {"optimist": 2, "critic": 2, "judge": 1}
        # A run that ended gives its answer again, calling nothing.
        again = await runs.ResumeRun(run_pb2.ResumeRunRequest(id=run_id))
        assert again.response.message == resumed.response.message
        assert calls_by_agent(fake) == {"optimist": 2, "critic": 2, "judge": 1}


async def _to_the_end(call: grpc.aio.UnaryStreamCall[pb.StreamRequest, pb.StreamResponse]) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass
