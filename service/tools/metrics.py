"""The tool sources' metrics and log lines: MCP servers up or down, tools enabled, pinned
tools that changed (README, Tools: "Pinning")."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.tools.spec import ServerTool


class ToolMetrics:
    """``switchboard_mcp_server_up{server}`` (1 up, 0 down),
    ``switchboard_tool_enabled{server,tool}`` (0 while disabled: server down or a changed
    pin) and ``switchboard_tool_pin_mismatches_total{server,tool}``. Server and tool names
    come from config and the servers' listings (bounded by what operators connect)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "switchboard_mcp_server_up",
            "Whether each MCP server is connected and listed (1) or down (0).",
            ["server"],
            registry=registry,
        )
        self.enabled = Gauge(
            "switchboard_tool_enabled",
            "Whether each MCP tool may be called (0: its server is down or its pin changed).",
            ["server", "tool"],
            registry=registry,
        )
        self.pin_mismatches = Counter(
            "switchboard_tool_pin_mismatches",
            "MCP tools whose listed definition no longer matched their pin (rug pulls).",
            ["server", "tool"],
            registry=registry,
        )
        self.disabled: dict[str, dict[str, str]] = {}  # server → tool → why (health, GetAgent)

    def server_changed(self, server: str, up: bool, tools: Mapping[str, ServerTool]) -> None:
        self.up.labels(server).set(1 if up else 0)
        for tool in tools.values():
            self.enabled.labels(server, tool.remote_name).set(1 if tool.enabled else 0)
        self.disabled[server] = {
            t.remote_name: t.disabled_reason for t in tools.values() if not t.enabled
        }

    def rug_pull(self, server: str, tool: str) -> None:
        self.pin_mismatches.labels(server, tool).inc()
