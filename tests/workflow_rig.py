"""What the workflow tests share: agents on the fake OpenAI upstream that say who they are,
counting the upstream calls per agent, and servers run as real processes to be killed."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc

from tests.backends import POSTGRES_DSN
from tests.fakes.httpserver import Conn, Received
from tests.fakes.openai_fake import OpenAIFake, Scenario
from tests.processes import Running, serve_process


def agents_yaml(base_url: str, *names: str) -> str:
    """A target on the fake and one agent per name, whose system prompt is its name."""
    agents = "\n".join(f"  {name}: {{system_prompt: '{name}', route: [fake]}}" for name in names)
    return (
        textwrap.dedent(f"""\
        targets:
          fake:
            provider: openai_compatible
            model: fake-model
            base_url: {base_url}/v1
        agents:
        """)
        + agents
        + "\n"
    )


def calls_by_agent(fake: OpenAIFake) -> dict[str, int]:
    """How many upstream requests each agent (its system prompt) made."""
    counts: dict[str, int] = {}
    for request in fake.received:
        messages = (request.body or {}).get("messages", [])
        if messages and messages[0].get("role") == "system":
            name = str(messages[0]["content"])
            counts[name] = counts.get(name, 0) + 1
    return counts


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])


@contextlib.contextmanager
def stub_for(port: int) -> Iterator[agent_pb2_grpc.AgentServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield agent_pb2_grpc.AgentServiceStub(channel)


@contextlib.asynccontextmanager
async def server(config: Path) -> AsyncIterator[Running]:
    """``switchboard serve`` as a process (its start awaited off the loop, so the fakes
    this loop serves keep answering)."""
    stack = contextlib.ExitStack()
    running = await asyncio.to_thread(stack.enter_context, serve_process(config))
    try:
        yield running
    finally:
        await asyncio.to_thread(stack.close)


async def drop_schemas(schema: str) -> None:
    """Drop a test's state schema and DBOS's beside it."""
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        for name in (schema, f"{schema}_dbos"):
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


class AgentsFake(OpenAIFake):
    """The fake OpenAI upstream answering per agent (its system prompt): the next of
    ``first[name]``, else ``answers[name]``, else "<name> says: <last message>"."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, Scenario] = {}
        self.first: dict[str, list[Scenario]] = {}

    async def handle(self, request: Received, conn: Conn) -> bool:
        messages = (request.body or {}).get("messages", [])
        if request.method == "POST" and messages and messages[0].get("role") == "system":
            name = str(messages[0]["content"])
            last = str(messages[-1].get("content", ""))
            queued = self.first.get(name)
            scenario = queued.pop(0) if queued else self.answers.get(name)
            self._queue.appendleft(scenario or Scenario(text=f"{name} says: {last}"))
        return await super().handle(request, conn)


def write_config(tmp_path: Path, base_url: str, workflows: str, *agents: str) -> Path:
    config = tmp_path / "switchboard.yaml"
    config.write_text(
        agents_yaml(base_url, *agents)
        + workflows
        + f"state: {{backend: embedded, data_dir: {tmp_path / 'data'}}}\n"
        + "auth: {enabled: false}\n"
    )
    return config


async def follow(port: int, run_id: str) -> list[pb.StreamResponse]:
    """Every event of ``run_id`` from a reattached stream, to its finish."""
    with stub_for(port) as stub:
        return [e async for e in stub.Stream(pb.StreamRequest(run_id=run_id), timeout=60)]
