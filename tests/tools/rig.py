"""Real parts for the tools tests: the MCP test server (stdio, or streamable HTTP in a
subprocess), an HTTP tool served by aiohttp, and a config that wires them to an agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.own_redis import free_port

MCP_SERVER = Path(__file__).resolve().parent.parent / "fakes" / "mcp_server.py"
ENVIRON = {
    "OPENAI_API_KEY": "sk-test-openai-key-123",
    "ANTHROPIC_API_KEY": "sk-ant-test-key-456",
    "TOOL_SECRET": "s3cret-tool-value-789",
    "HTTP_TOOL_TOKEN": "tok-http-tool-000",
}


@dataclass
class HttpToolServer:
    """An aiohttp server answering GET /weather/{city} and POST /orders; it records each
    request's path, query, body and Authorization header."""

    url: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    big: int = 0  # bytes /weather answers with, when set


@contextlib.asynccontextmanager
async def http_tool_server() -> AsyncIterator[HttpToolServer]:
    state = HttpToolServer()

    async def weather(request: web.Request) -> web.Response:
        state.seen.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "auth": request.headers.get("Authorization", ""),
            }
        )
        if state.big:
            return web.Response(text="y" * state.big)
        return web.json_response({"city": request.match_info["city"], "temp_c": 21})

    async def orders(request: web.Request) -> web.Response:
        state.seen.append({"path": request.path, "body": await request.json()})
        return web.json_response({"order": "o-1"})

    app = web.Application()
    app.router.add_get("/weather/{city}", weather)
    app.router.add_post("/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def mcp_http_server() -> AsyncIterator[str]:
    """The MCP test server over streamable HTTP in a subprocess; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(MCP_SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # bounded wait for the port to answer
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def config(
    *,
    upstream: str,
    provider: str = "openai",
    record_file: str = "/dev/null",
    http_url: str = "http://127.0.0.1:9",
    mcp_url: str | None = None,
    extra_policy: str = "",
    max_steps: int = 6,
    state: str = "",
) -> str:
    key = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    base = f"{upstream}/v1" if provider == "openai" else upstream
    remote = (
        f"""
      remote:
        transport: streamable_http
        url: {mcp_url}
        headers: {{Authorization: {{env: HTTP_TOOL_TOKEN, prefix: "Bearer "}}}}
        trust_read_only_hint: true
"""
        if mcp_url
        else ""
    )
    return f"""
    targets:
      model:
        provider: {provider}
        model: fake-model
        base_url: {base}
        api_key: {{env: {key}}}
    mcp_servers:
      local:
        transport: stdio
        command: [python, {MCP_SERVER}]
        env: {{RECORD_FILE: {record_file}, TOOL_SECRET: {{env: TOOL_SECRET}}}}
        trust_read_only_hint: true
        relist_interval_s: 0.2
        connect_timeout_s: 120
        tools:
          slow: {{timeout_s: 0.5}}
          big: {{max_result_bytes: 65536, timeout_s: 120}}
          record: {{class: write, approval: never}}
          die: {{class: read_only}}
          rug: {{class: write, approval: never}}
{extra_policy}
{remote}
    http_tools:
      weather:
        description: Weather for a city.
        url: {http_url}/weather/{{city}}
        parameters:
          type: object
          properties: {{city: {{type: string}}, units: {{type: string}}}}
          required: [city]
        headers: {{Authorization: {{env: HTTP_TOOL_TOKEN, prefix: "Bearer "}}}}
        class: read_only
      order:
        description: Place an order.
        method: POST
        url: {http_url}/orders
        parameters:
          type: object
          properties: {{item: {{type: string}}, qty: {{type: integer}}}}
          required: [item]
        class: write
        approval: never
    {state}
    agents:
      ops:
        system_prompt: Use your tools.
        route: [model]
        server_tools: [local.*, weather, order{", remote.*" if mcp_url else ""}]
        loop: {{max_steps: {max_steps}}}
        tools:
          - name: ask_user
            parameters: {{type: object, properties: {{q: {{type: string}}}}}}
    """


def tool_messages(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The (tool_call_id, text) of each tool result in an OpenAI request body."""
    return [
        (m["tool_call_id"], m["content"] if isinstance(m["content"], str) else json.dumps(m))
        for m in body["messages"]
        if m["role"] == "tool"
    ]
