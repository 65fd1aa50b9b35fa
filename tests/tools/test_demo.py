"""The default config's operator agent: the demo MCP server shipped beside the config, on
the mock model, with no keys."""

from __future__ import annotations

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc

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
        # add_note is a write that needs approval: it does not run without one.
        note = await stub.Invoke(ask('call add_note {"text": "hello"}'), timeout=60)
        assert note.steps[0].tool_results[0].outcome == pb.TOOL_OUTCOME_DENIED
        listed = await stub.Invoke(ask("call list_notes {}"), timeout=60)
        assert listed.steps[0].tool_results[0].preview == "(no notes)"
        agent = await stub.GetAgent(pb.GetAgentRequest(name="operator"))
        assert agent.agent.name == "operator"
