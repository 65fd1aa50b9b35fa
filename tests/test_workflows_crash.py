"""Workflow runs survive SIGKILL: a restarted server (or another replica on shared state)
resumes each run from its last finished step, and no finished step calls its upstream twice.

Servers run as real processes; the fake upstream runs here and counts every call per agent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path

from switchboard.v1 import agent_pb2 as pb

from tests.backends import postgres_schema, redis_prefix, shared_state_yaml
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.waiting import wait_for
from tests.workflow_rig import (
    AgentsFake,
    agents_yaml,
    calls_by_agent,
    drop_schemas,
    follow,
    server,
    stub_for,
    user,
    write_config,
)

SEQUENTIAL = """
workflows:
  chain:
    kind: sequential
    steps:
      - {id: first, agent: one}
      - {id: second, agent: two, input: "after {previous}"}
      - {id: third, agent: three, input: "{steps.first} + {previous}"}
"""


async def test_sigkill_between_steps_resumes_without_repeating_a_finished_step(
    tmp_path: Path,
) -> None:
    async with OpenAIFake(Scenario(text="ok")) as fake:
        # The first step answers; the second never does, until the server is killed.
        fake.push(Scenario(text="alpha"), Scenario(hang=True))
        config = write_config(tmp_path, fake.base_url, SEQUENTIAL, "one", "two", "three")
        run_id = ""
        async with server(config) as first:
            with stub_for(first.port) as stub:
                call = stub.Stream(pb.StreamRequest(agent="chain", messages=[user("go")]))
                async for event in call:
                    if event.HasField("start"):
                        run_id = event.start.run_id
                    if event.HasField("workflow_step_start") and (
                        event.workflow_step_start.step_id == "second"
                    ):
                        break
                await wait_for(lambda: calls_by_agent(fake).get("two") == 1, what="step two")
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait()
                call.cancel()
        assert run_id.startswith("run_")
        # Killed, it left its last commits in the WAL (never checkpointed into the file):
        # the restart must read them back from there.
        database = tmp_path / "data" / "workflows.sqlite"
        assert database.with_name("workflows.sqlite-wal").stat().st_size > 0
        async with server(config) as second:
            try:
                events = await follow(second.port, run_id)
            except Exception:
                print(second.output[-6000:])
                raise
    steps = [e.workflow_step_finish.step for e in events if e.HasField("workflow_step_finish")]
    assert [s.step_id for s in steps] == ["first", "second", "third"]
    assert steps[0].text == "alpha"
    assert events[-1].HasField("finish")
    # The finished step ran once; the one cut off ran again; the rest once.
    assert calls_by_agent(fake) == {"one": 1, "two": 2, "three": 1}
    third = [r for r in fake.received if r.body["messages"][0]["content"] == "three"]
    assert third[0].body["messages"][-1]["content"] == "alpha + ok"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


PARALLEL = """
workflows:
  panel:
    kind: parallel
    branches:
      - {id: pro, agent: optimist}
      - {id: con, agent: critic}
    merge: {agent: judge}
"""


async def test_a_kill_during_a_parallel_branch_resumes_only_the_unfinished_branch(
    tmp_path: Path,
) -> None:
    async with AgentsFake() as fake:
        fake.first["critic"] = [Scenario(hang=True)]
        config = write_config(tmp_path, fake.base_url, PARALLEL, "optimist", "critic", "judge")
        async with server(config) as first:
            with stub_for(first.port) as stub:
                call = stub.Stream(pb.StreamRequest(agent="panel", messages=[user("go")]))
                run_id = (await call.read()).start.run_id
                while (await call.read()).workflow_step_finish.step.step_id != "pro":
                    pass
                await wait_for(lambda: "critic" in calls_by_agent(fake), what="the critic")
                os.kill(first.process.pid, signal.SIGKILL)
                first.process.wait()
                call.cancel()
        async with server(config) as second:
            events = await follow(second.port, run_id)
    steps = {
        e.workflow_step_finish.step.step_id for e in events if e.HasField("workflow_step_finish")
    }
    assert steps == {"pro", "con", "merge"}
    assert calls_by_agent(fake) == {"optimist": 1, "critic": 2, "judge": 1}


async def test_a_replica_completes_the_run_of_one_that_died(tmp_path: Path) -> None:
    async with postgres_schema() as schema, redis_prefix() as prefix, AgentsFake() as fake:
        fake.first["two"] = [Scenario(hang=True)]
        config = tmp_path / "switchboard.yaml"
        config.write_text(
            agents_yaml(fake.base_url, "one", "two", "three")
            + SEQUENTIAL
            + shared_state_yaml(schema, prefix)
            + "auth: {enabled: false}\n"
        )
        try:
            async with server(config) as doomed, server(config) as survivor:
                with stub_for(doomed.port) as stub:
                    call = stub.Stream(pb.StreamRequest(agent="chain", messages=[user("go")]))
                    run_id = (await call.read()).start.run_id
                    await wait_for(lambda: "two" in calls_by_agent(fake), what="step two")
                    os.kill(doomed.process.pid, signal.SIGKILL)
                    doomed.process.wait()
                    call.cancel()
                events = await follow(survivor.port, run_id)
        finally:
            await drop_schemas(schema)
    finished = [e.workflow_step_finish.step for e in events if e.HasField("workflow_step_finish")]
    assert [s.step_id for s in finished] == ["first", "second", "third"]
    assert calls_by_agent(fake) == {"one": 1, "two": 2, "three": 1}
