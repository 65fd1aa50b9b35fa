"""The agent loop's overhead per step against calling the MCP tool directly with the SDK.

Both sides call the same tool on the same stdio MCP server (tests/fakes/mcp_server.py,
``lookup``): ``direct`` with the official SDK's ``Client.call_tool``; ``loop`` through
:class:`service.tools.loop.ToolLoop` (policy, argument schema check, guards, the host's
timeout and concurrency lane, result events, the trace), with model steps that answer at
once in-process (no router, no provider: only the loop's own cost is measured). Runs
alternate; medians are reported. Target: under 1 ms per step on top of the tool's time.

    .venv/bin/python bench/tools_bench.py --steps 200 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path

import httpx2
from mcp import Client, StdioServerParameters

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from service.agents.spec import AgentSpec  # noqa: E402
from service.deadline import Deadline  # noqa: E402
from service.domain import (  # noqa: E402
    AgentRequest,
    Event,
    Finish,
    FinishReason,
    Message,
    Parameters,
    Role,
    Start,
    TargetRef,
    TextPart,
    ToolCallDelta,
    ToolOutcome,
    Usage,
    UsageEvent,
)
from service.guards import GuardContext  # noqa: E402
from service.tools.host import ToolHost  # noqa: E402
from service.tools.loop import LoopState, ToolLoop  # noqa: E402
from service.tools.results import ToolOutput  # noqa: E402
from service.tools.spec import LoopPolicy, McpServerSpec, ToolPolicy, ToolsSpec  # noqa: E402


class InstantHost(ToolHost):
    """The same host whose tool answers at once: what is left is the loop's own cost."""

    async def run(self, tool, arguments, deadline):  # type: ignore[no-untyped-def]
        return ToolOutput(ToolOutcome.OK, "value", 5, 0.0)


SERVER = Path(__file__).resolve().parent.parent / "tests" / "fakes" / "mcp_server.py"
TARGET = TargetRef("bench", "mock", "bench")


async def direct(client: Client, steps: int) -> float:
    began = time.perf_counter()
    for i in range(steps):
        await client.call_tool("lookup", {"key": f"k{i}"})
    return (time.perf_counter() - began) / steps


async def looped(loop: ToolLoop, agent: AgentSpec, steps: int) -> float:
    count = 0

    async def step(
        request: AgentRequest, offered: AgentSpec, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        nonlocal count
        count += 1
        yield Start(request.request_id, agent.name, agent.version, TARGET)
        if count <= steps:
            arguments = json.dumps({"key": f"k{count}"})
            yield ToolCallDelta(0, f"c{count}", "lookup", arguments)
            yield UsageEvent(Usage(10, 5))
            yield Finish(FinishReason.TOOL_CALLS, target=TARGET)
        else:
            yield UsageEvent(Usage(10, 5))
            yield Finish(FinishReason.STOP, target=TARGET)

    request = AgentRequest("bench", (Message(Role.USER, (TextPart("go"),)),), "r")
    state = LoopState(request, list(request.messages), 0)
    began = time.perf_counter()
    async for _ in loop.run(state, agent, step, GuardContext("bench"), Deadline.after(600)):
        pass
    return (time.perf_counter() - began) / steps


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    async with httpx2.AsyncClient() as http:
        host = ToolHost(http)
        spec = McpServerSpec(
            "bench",
            "stdio",
            command=(sys.executable, str(SERVER)),
            env=(("RECORD_FILE", "/dev/null"),),
            tools={"lookup": ToolPolicy(tool_class="read_only")},
        )
        await host.configure(ToolsSpec(servers={"bench": spec}), wait_s=60)
        loop = ToolLoop(host)
        agent = AgentSpec(
            "bench", "", "v", "", (), Parameters(), frozenset(), (), False,
            loop=LoopPolicy(("bench.lookup",), max_steps=args.steps + 1),
        )  # fmt: skip
        params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
        async with Client(params, cache=None) as client:
            await direct(client, 20)  # warm up both
            await looped(loop, agent, 20)
            d, lp = [], []
            for _ in range(args.runs):
                d.append(await direct(client, args.steps))
                lp.append(await looped(loop, agent, args.steps))
            instant = InstantHost(http)
            await instant.configure(ToolsSpec(servers={"bench": spec}), wait_s=60)
            own = [await looped(ToolLoop(instant), agent, args.steps) for _ in range(args.runs)]
            await instant.aclose()
        await host.aclose()
    dm, lm = statistics.median(d) * 1000, statistics.median(lp) * 1000
    print(f"the loop's own cost:    {statistics.median(own) * 1000:.3f} ms per step (tool: 0)")
    print(f"direct SDK call_tool:   {dm:.3f} ms per call (median of {args.runs} runs)")
    print(f"through the agent loop: {lm:.3f} ms per step")
    print(f"loop overhead per step: {lm - dm:+.3f} ms ({lm / dm:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
