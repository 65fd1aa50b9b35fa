"""The AgentService contract through a real grpc.aio server and the Python client."""

from __future__ import annotations

import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import AsyncClient, Folder, user


async def test_invoke_echo_answers_with_the_last_user_message(client: AsyncClient) -> None:
    response = await client.invoke("echo", "hello there, switchboard")

    assert response.message.role == pb.ROLE_ASSISTANT
    assert response.message.content[0].text == "hello there, switchboard"
    assert response.finish_reason == pb.FINISH_REASON_STOP
    assert response.agent == "echo"
    assert response.agent_version.startswith("h-")
    assert response.target == pb.Target(name="mock-echo", provider="mock", model="echo")
    assert response.attempts == 1
    assert response.usage.output_tokens == 3
    assert response.usage.total_tokens == response.usage.input_tokens + 3
    assert len(response.request_id) == 32


async def test_stream_events_come_in_order(client: AsyncClient) -> None:
    events = [e async for e in client.stream("echo", "one two three")]
    kinds = [e.WhichOneof("event") for e in events]

    assert kinds == ["start", "text_delta", "text_delta", "text_delta", "usage", "finish"]
    assert "".join(e.text_delta.text for e in events[1:4]) == "one two three"


@pytest.mark.parametrize("agent", ["echo", "assistant"])
async def test_folded_stream_equals_invoke(client: AsyncClient, agent: str) -> None:
    conversation = [user("what is the weather like"), user("in Paris, please")]
    invoked = await client.invoke(agent, conversation, request_id="req-1")
    folder = Folder()
    async for event in client.stream(agent, conversation, request_id="req-1"):
        folder.add(event)

    assert folder.result() == invoked


async def test_tool_call_folds_equal_to_invoke(client: AsyncClient) -> None:
    invoked = await client.invoke("assistant", "call get_weather Paris", request_id="r")
    folder = Folder()
    async for event in client.stream("assistant", "call get_weather Paris", request_id="r"):
        folder.add(event)

    assert folder.result() == invoked
    assert invoked.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    (call,) = invoked.message.tool_calls
    assert call.name == "get_weather"
    assert call.arguments_json == '{"city": "Paris"}'
    assert call.id.startswith("call_")


async def test_list_and_get_agents(client: AsyncClient) -> None:
    agents = await client.list_agents()
    assert [a.name for a in agents] == ["assistant", "echo", "echo-twice", "operator"]
    assert [a.kind for a in agents] == [
        pb.AGENT_KIND_AGENT,
        pb.AGENT_KIND_AGENT,
        pb.AGENT_KIND_SEQUENTIAL,
        pb.AGENT_KIND_AGENT,
    ]

    agent = await client.get_agent("assistant")
    assert agent.route[0].provider == "mock"
    assert agent.tools[0].name == "get_weather"
    assert agent.tools[0].parameters["required"] == ["city"]
    assert agent.accepts_caller_tools
    assert "temperature" in agent.overridable_parameters
    assert agent.version == agents[0].version
