"""A small MCP server (stdio) for the default config's ``operator`` agent: Switchboard
starts it, lists its tools and runs them for the agent. Built with the official ``mcp``
SDK; it needs no keys and keeps its notes in memory.

Run it on its own to try it with any MCP client: ``python config/mcp_demo_server.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mcp.server import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("switchboard-demo")
_NOTES: list[str] = []
_CITIES = {
    "paris": "Paris: 18°C, light rain, wind 12 km/h",
    "tokyo": "Tokyo: 24°C, clear, wind 5 km/h",
    "lima": "Lima: 16°C, overcast, wind 8 km/h",
}


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def get_weather(city: str) -> str:
    """Current weather for a city (demo data: Paris, Tokyo, Lima)."""
    return _CITIES.get(city.strip().lower(), f"{city}: no data (try Paris, Tokyo or Lima)")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def utc_time() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def list_notes() -> str:
    """The notes saved so far, one per line."""
    return "\n".join(_NOTES) or "(no notes)"


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
def add_note(text: str) -> str:
    """Save a note (a write: the config asks a person to approve it)."""
    _NOTES.append(text)
    return f"saved note {len(_NOTES)}"


if __name__ == "__main__":
    server.run()
