"""One MCP server, supervised: connected through the official ``mcp`` SDK, its tools listed
and pinned, its calls made, and restarted with backoff when it dies.

stdio servers are started by Switchboard (their environment may carry secrets: only the
server's process sees them); streamable HTTP servers are reached at their URL with the
configured headers. The SDK's ``Client`` is entered and left by one owner task (anyio's
cancel scopes demand it); calls are made from the callers' tasks.

Pinning: a tool's definition is pinned by :func:`digest` (its name, description and input
schema). The pin is the config's (``pin:``), else what the server first listed in this
process. A tool whose listed definition no longer matches its pin (a "rug pull") is
disabled, logged and counted until the config accepts the new digest; it is also offered
to no model meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx2
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CONNECTION_CLOSED, CallToolResult
from mcp_types import Tool as McpTool

from service.domain import ToolOutcome
from service.secrets import Secret
from service.tools.results import ToolOutput, failed, too_large
from service.tools.spec import McpServerSpec, ServerTool
from service.tools.stderr import StderrPipe

log = logging.getLogger(__name__)
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


def digest(name: str, description: str, schema: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the tool's name, description and input schema (canonical JSON)."""
    text = json.dumps(
        {"name": name, "description": description, "inputSchema": schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


class McpServer:
    """See the module docstring. ``on_change(server)`` is called when its tools change
    (listed, disabled, down); ``on_rug_pull(server, tool)`` when a pinned tool changed."""

    def __init__(
        self,
        spec: McpServerSpec,
        *,
        on_change: Callable[[McpServer], None] = lambda _: None,
        on_rug_pull: Callable[[str, str], None] = lambda _s, _t: None,
    ) -> None:
        self.spec = spec
        self.tools: dict[str, ServerTool] = {}  # by the server's tool name
        self.up = False
        self._on_change = on_change
        self._on_rug_pull = on_rug_pull
        self._pins: dict[str, str] = {}  # first-seen digests (the config's pins win)
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._broken = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._relist = asyncio.Event()
        self._tried = asyncio.Event()  # the first connection attempt has ended

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        """Start the owner task (connect, list, relist, restart); returns at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._own(), name=f"mcp:{self.name}")

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once the server is connected and listed; False as soon as its first attempt
        failed, or after ``timeout_s`` (a start is not held up by a broken server)."""
        tried = asyncio.ensure_future(self._tried.wait())
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait([tried, ready], timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            tried.cancel()
            ready.cancel()
        return self._ready.is_set()

    def reconfigure(self, spec: McpServerSpec) -> None:
        """Take new policies and pins (same transport, command and URL) and re-check the
        listed tools against them."""
        self.spec = spec
        self._relist.set()

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _own(self) -> None:
        failures = 0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                await self._connected()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (any failure of the server: restart it)
                log.warning(
                    "MCP server %s is down: %s", self.name, _kind(exc), extra={"server": self.name}
                )
            self._down()
            self._tried.set()
            if self._stop.is_set():
                return
            failures = 0 if time.monotonic() - began > 60 else failures + 1
            await asyncio.sleep(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])

    async def _connected(self) -> None:
        spec = self.spec
        async with contextlib.AsyncExitStack() as stack:
            if spec.transport == "stdio":
                # "python" is the interpreter running Switchboard (its venv has the SDK).
                program = sys.executable if spec.command[0] == "python" else spec.command[0]
                params = StdioServerParameters(
                    command=program,
                    args=list(spec.command[1:]),
                    env={k: _reveal(v) for k, v in spec.env} or None,
                    cwd=spec.cwd,
                )
                stderr = StderrPipe(self.name)
                stack.callback(stderr.started)  # closed however the connection ends
                transport: Any = stdio_client(params, errlog=stderr.writer)
            else:
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers={k: _reveal(v) for k, v in spec.headers})
                )
                transport = streamable_http_client(spec.url, http_client=http)
            client = Client(transport, cache=None, read_timeout_seconds=None)
            async with asyncio.timeout(spec.connect_timeout_s):
                await stack.enter_async_context(client)
                await self._list(client)
            self._client, self._broken = client, asyncio.Event()
            self.up = True
            self._ready.set()
            self._on_change(self)
            log.info("MCP server %s is up: %d tools", self.name, len(self.tools))
            while not self._stop.is_set() and not self._broken.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(spec.relist_interval_s):
                        await self._relist.wait()
                self._relist.clear()
                if not self._broken.is_set():
                    async with asyncio.timeout(spec.connect_timeout_s):
                        await self._list(client)
            if self._broken.is_set():
                raise ConnectionError("the connection closed")

    def _down(self) -> None:
        self._client = None
        self._ready.clear()
        if self.up:
            self.up = False
            self.tools = {n: _disabled(t, "its MCP server is down") for n, t in self.tools.items()}
            self._on_change(self)

    async def _list(self, client: Client) -> None:
        listed: list[McpTool] = []
        cursor: str | None = None
        for _ in range(100):  # a paginator that never ends cannot hang us
            page = await client.list_tools(cursor=cursor)
            listed += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        tools = {tool.name: self._server_tool(tool) for tool in listed}
        if tools != self.tools:
            self.tools = tools
            self._on_change(self)

    def _server_tool(self, tool: McpTool) -> ServerTool:
        spec = self.spec
        schema = dict(tool.input_schema or {"type": "object"})
        description = tool.description or ""
        found = digest(tool.name, description, schema)
        policy = spec.policy_of(tool.name)
        hint = tool.annotations.read_only_hint if tool.annotations else None
        pin = policy.pin or self._pins.setdefault(tool.name, found)
        out = ServerTool(
            name=tool.name,
            source=f"mcp:{spec.name}",
            description=description,
            parameters=schema,
            policy=policy.resolved(hint, spec.trust_read_only_hint),
            remote_name=tool.name,
            digest=found,
        )
        if found != pin:
            previous = self.tools.get(tool.name)
            if previous is None or previous.enabled:  # reported once per change
                log.warning(
                    "MCP server %s changed its pinned tool %s: disabled until the config "
                    "accepts %s (pin: %s)",
                    spec.name,
                    tool.name,
                    found,
                    pin,
                    extra={"server": spec.name, "tool": tool.name, "digest": found},
                )
                self._on_rug_pull(spec.name, tool.name)
            return _disabled(out, f"its definition changed from the pinned {pin}")
        return out

    async def call(self, tool: str, arguments: Mapping[str, Any], timeout_s: float) -> ToolOutput:
        """Call ``tool`` within ``timeout_s``; every failure is an error result, never an
        exception (cancellation excepted)."""
        began = time.monotonic()
        limit = self.spec.policy_of(tool).max_result_bytes
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
                client = self._client
                assert client is not None
                result = await client.call_tool(tool, dict(arguments))
        except TimeoutError:
            return failed(ToolOutcome.TIMEOUT, f"timed out after {timeout_s:g}s", _since(began))
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                # The owner restarts it; calls from now on wait for the new connection.
                self._ready.clear()
                self._broken.set()
                return failed(
                    ToolOutcome.ERROR, "the tool's server went away during the call", _since(began)
                )
            return failed(
                ToolOutcome.ERROR,
                f"the tool's server refused the call: {exc.message}"[:1000],
                _since(began),
            )
        except Exception as exc:  # noqa: BLE001 (a broken server must not fail the run)
            log.warning("MCP call %s.%s failed: %s", self.name, tool, _kind(exc))
            return failed(ToolOutcome.ERROR, f"the call failed ({_kind(exc)})", _since(began))
        return _output(result, limit, _since(began))


def _output(result: CallToolResult, limit: int, elapsed: float) -> ToolOutput:
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parts.append(text)
        else:
            parts.append(
                json.dumps(block.model_dump(mode="json", by_alias=True, exclude_none=True))
            )
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    size = len(text.encode())
    if size > limit:
        return too_large(size, limit, elapsed)
    return ToolOutput(ToolOutcome.ERROR if result.is_error else ToolOutcome.OK, text, size, elapsed)


def _disabled(tool: ServerTool, reason: str) -> ServerTool:
    from dataclasses import replace  # noqa: PLC0415

    return replace(tool, enabled=False, disabled_reason=reason)


def _since(began: float) -> float:
    return time.monotonic() - began


def _kind(exc: BaseException) -> str:
    """An exception's kind, for logs: never its text (it may quote an env var or URL)."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return _kind(exc.exceptions[0])
    return type(exc).__name__
