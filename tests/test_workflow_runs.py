"""RunService for workflow runs: GetRun, ListRuns (tenant-scoped, paged, merged with the run
store's agent runs), CancelRun (every branch) and ResumeRun, through the real server against
the fake upstream."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc, run_pb2, run_pb2_grpc

from service.runs.records import RunRecord, RunState, new_run_id
from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.chain_helpers import make_keys
from tests.fakes.openai_fake import Scenario
from tests.harness import Served, serve_config
from tests.test_workflows import config, reason_of
from tests.waiting import wait_for
from tests.workflow_rig import AgentsFake, calls_by_agent, drop_schemas, user

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
            assert "fake error 400" in failed.error
            assert newest.id == started[2]
            assert newest.state == run_pb2.Run.STATE_SUCCEEDED
            assert (newest.kind, newest.steps, newest.request_id) == ("workflow", 3, "three")
            # Three steps take time: the run's update time is its last step's, not its start
            # (DBOS keeps its own to the second on SQLite, which once pinned it to the start).
            assert newest.update_time.ToNanoseconds() > newest.create_time.ToNanoseconds()
            # Metrics label a workflow's calls by its name, as the call log does.
            labelled = {
                s.labels["agent"]
                for m in served.app.metrics.registry.collect()
                if m.name == "switchboard_calls"
                for s in m.samples
                if s.labels.get("rpc_method") == "Invoke"
            }
            assert {"brief", "joined"} <= labelled
            assert "(unknown)" not in labelled
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
            got = await runs.GetRun(run_pb2.GetRunRequest(id=started[0]), metadata=acme)
            assert (got.run.state, got.run.name) == (run_pb2.Run.STATE_SUCCEEDED, "brief")

            # Another tenant's runs are not there, and not found by id.
            mine = await runs.ListRuns(run_pb2.ListRunsRequest(), metadata=globex)
            assert [r.id for r in mine.runs] == [theirs.run_id]
            for call in (
                runs.GetRun(run_pb2.GetRunRequest(id=started[0]), metadata=globex),
                runs.CancelRun(run_pb2.CancelRunRequest(id=started[0]), metadata=globex),
                runs.ResumeRun(run_pb2.ResumeRunRequest(id=started[0]), metadata=globex),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as hidden:
                    await call
                assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
                assert reason_of(hidden.value) == "RUN_NOT_FOUND"

            # Bad requests say what is wrong; a run that ended cannot be cancelled.
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
            with pytest.raises(grpc.aio.AioRpcError) as no_messages:
                await runs.ResumeRun(
                    run_pb2.ResumeRunRequest(id=started[0], messages=[user("x")]), metadata=acme
                )
            assert no_messages.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("backend", ["embedded", "shared"])
async def test_pages_merge_agent_runs_and_workflow_runs_newest_first(backend: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(AgentsFake())
        state = ""
        if backend == "shared":
            schema = await stack.enter_async_context(postgres_schema())
            prefix = await stack.enter_async_context(redis_prefix())
            stack.push_async_callback(drop_schemas, schema)
            state = shared_state_yaml(schema, prefix)
        served = await stack.enter_async_context(serve_config(config(fake, state)))
        await _pages_merge(served)


async def _pages_merge(served: Served) -> None:
    agents = agent_pb2_grpc.AgentServiceStub(served.channel)
    runs = run_pb2_grpc.RunServiceStub(served.channel)
    expected: list[str] = []  # oldest first
    for index in range(3):
        answer = await agents.Invoke(pb.InvokeRequest(agent="joined", messages=[user("x")]))
        expected.append(answer.run_id)
        now = time.time()
        stored = RunRecord(
            new_run_id(), "default", "agent", "operator", RunState.WAITING,
            f"agent-{index}", "", now, now,
        )  # fmt: skip
        await served.app.stores.runs.create_run(stored)
        expected.append(stored.run_id)
    seen: list[run_pb2.Run] = []
    token = ""
    for _ in range(4):
        page = await runs.ListRuns(run_pb2.ListRunsRequest(page_size=2, page_token=token))
        seen += page.runs
        token = page.next_page_token
        if not token:
            break
    assert [r.id for r in seen] == expected[::-1]
    assert [r.kind for r in seen] == ["agent", "workflow"] * 3
    only = await runs.ListRuns(run_pb2.ListRunsRequest(kind="agent"))
    assert [r.id for r in only.runs] == expected[::-2]


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
        assert running.run.kind == "workflow"

        cancelled = await runs.CancelRun(run_pb2.CancelRunRequest(id=run_id))
        assert cancelled.run.state == run_pb2.Run.STATE_CANCELLED
        await wait_for(lambda: fake.abandoned == 2, what="both upstream calls dropped")
        # The caller following it is told why its answer will not come.
        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            await _to_the_end(call)
        assert stopped.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert reason_of(stopped.value) == "RUN_CANCELLED"
        listed = await runs.ListRuns(
            run_pb2.ListRunsRequest(state=run_pb2.Run.STATE_CANCELLED, kind="workflow")
        )
        assert [r.id for r in listed.runs] == [run_id]
        assert "judge" not in calls_by_agent(fake)

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
