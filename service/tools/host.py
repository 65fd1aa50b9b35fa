"""Every tool source of the process: MCP servers (supervised) and HTTP tools, reconciled
with each config snapshot, and the one place a server tool is run (its timeout, its result
cap, its concurrency).

It outlives runtimes: a reload keeps an MCP server whose transport, command, environment
and URL are unchanged (it takes the new policies and pins), restarts one whose are changed,
and stops one no longer configured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from service.deadline import Deadline
from service.domain import ToolOutcome
from service.tools.http_tool import HttpTool
from service.tools.mcp import McpServer
from service.tools.policy import allowed
from service.tools.results import ToolOutput, failed
from service.tools.spec import LoopPolicy, McpServerSpec, ServerTool, ToolsSpec

log = logging.getLogger(__name__)


def _same_process(a: McpServerSpec, b: McpServerSpec) -> bool:
    """Whether ``b`` can be served by the connection made for ``a``."""
    return (a.transport, a.command, a.cwd, a.env, a.url, a.headers) == (
        b.transport,
        b.command,
        b.cwd,
        b.env,
        b.url,
        b.headers,
    )


class ToolHost:
    """See the module docstring. ``on_change(server, up, tools)`` is told of each MCP
    server's state; ``on_rug_pull(server, tool)`` of each pinned tool that changed."""

    def __init__(
        self,
        http: httpx2.AsyncClient,
        *,
        on_change: Callable[[str, bool, Mapping[str, ServerTool]], None] = lambda *_: None,
        on_rug_pull: Callable[[str, str], None] = lambda *_: None,
    ) -> None:
        self._http = http
        self._on_change = on_change
        self._on_rug_pull = on_rug_pull
        self.servers: dict[str, McpServer] = {}
        self._http_tools: dict[str, HttpTool] = {}
        self._http_specs: dict[str, ServerTool] = {}
        self._lanes: dict[tuple[str, str], asyncio.Semaphore] = {}

    async def configure(self, spec: ToolsSpec, wait_s: float = 0.0) -> None:
        """Reconcile with ``spec``; wait up to ``wait_s`` for new MCP servers to list their
        tools (a server still connecting serves no tools yet: it is not an error)."""
        started = []
        for name, server_spec in spec.servers.items():
            current = self.servers.get(name)
            if current is not None and _same_process(current.spec, server_spec):
                current.reconfigure(server_spec)
                continue
            if current is not None:
                await current.aclose()
            server = McpServer(
                server_spec,
                on_change=lambda s: self._on_change(s.name, s.up, s.tools),
                on_rug_pull=self._on_rug_pull,
            )
            self.servers[name] = server
            server.start()
            started.append(server)
        for name in set(self.servers) - set(spec.servers):
            await self.servers.pop(name).aclose()
        self._http_tools = {name: HttpTool(t, self._http) for name, t in spec.http.items()}
        self._http_specs = {
            name: ServerTool(
                name=name,
                source="http",
                description=t.description,
                parameters=t.parameters,
                policy=t.policy.resolved(),
                remote_name=name,
            )
            for name, t in spec.http.items()
        }
        if started and wait_s > 0:
            ready = await asyncio.gather(*(s.wait_ready(wait_s) for s in started))
            for server, ok in zip(started, ready, strict=True):
                if not ok:
                    log.warning(
                        "MCP server %s not ready after %gs: its tools come when it is",
                        server.name,
                        wait_s,
                    )

    def tools_for(self, loop: LoopPolicy) -> dict[str, ServerTool]:
        """The server tools an agent may call, by the name the model sees, disabled ones
        included (a call to one is refused). A name two sources share goes to the first
        listed."""
        out: dict[str, ServerTool] = {}
        for entry in loop.allow:
            server, dot, _ = entry.partition(".")
            if not dot:
                tool = self._http_specs.get(entry)
                if tool is not None:
                    out.setdefault(tool.name, tool)
                continue
            mcp = self.servers.get(server)
            if mcp is None:
                continue
            for tool in mcp.tools.values():
                if allowed(loop.allow, tool):
                    out.setdefault(tool.name, tool)
        return out

    async def run(
        self, tool: ServerTool, arguments: Mapping[str, Any], deadline: Deadline
    ) -> ToolOutput:
        """Run ``tool`` within its timeout and the call's deadline, at most
        ``policy.concurrency`` at once in this process. Never raises for the tool's failures
        (an error result instead); cancellation propagates."""
        policy = tool.policy
        lane = self._lanes.get((tool.source, tool.remote_name))
        if lane is None:
            lane = self._lanes.setdefault(
                (tool.source, tool.remote_name), asyncio.Semaphore(policy.concurrency)
            )
        began = time.monotonic()
        timeout = min(policy.timeout_s, deadline.remaining())
        if timeout <= 0:
            return failed(ToolOutcome.TIMEOUT, "no time left in the call's deadline")
        try:
            async with asyncio.timeout(timeout):
                await lane.acquire()
        except TimeoutError:
            return failed(
                ToolOutcome.TIMEOUT, f"timed out after {timeout:g}s", time.monotonic() - began
            )
        try:
            left = max(0.001, timeout - (time.monotonic() - began))
            if tool.source == "http":
                http = self._http_tools.get(tool.remote_name)
                if http is None:
                    return failed(ToolOutcome.NOT_ALLOWED, "the tool is no longer configured")
                return await http.call(arguments, left)
            server = self.servers.get(tool.server)
            if server is None:
                return failed(ToolOutcome.NOT_ALLOWED, "the tool is no longer configured")
            return await server.call(tool.remote_name, arguments, left)
        finally:
            lane.release()

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose() for s in self.servers.values()))
        self.servers.clear()
