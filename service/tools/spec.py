"""Server tools as the runtime sees them, converted once per config snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from service.domain import Tool
from service.secrets import Secret

READ_ONLY = "read_only"
WRITE = "write"


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on a call's arguments (:mod:`service.tools.policy` evaluates it): ``path``
    into the arguments, an operator (``eq``, ``ne``, ``gt``, ``ge``, ``lt``, ``le``, ``in``,
    ``not_in``, ``matches``, ``exists``) and its operand."""

    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    """A tool's policy. ``tool_class`` and ``approval`` may be None in config (decided when
    the tool is known: :meth:`resolved`)."""

    tool_class: str | None = None
    approval: str | None = None
    when: tuple[Condition, ...] = ()
    timeout_s: float = 30.0
    max_result_bytes: int = 64 * 1024
    concurrency: int = 8
    on_deny: str = "refuse"
    approval_ttl_s: float = 86400.0
    pin: str | None = None

    def resolved(self, read_only_hint: bool | None = None, trust_hint: bool = False) -> ToolPolicy:
        """This policy with its class (the config's; else the MCP ``readOnlyHint`` when the
        server is trusted; else ``write``) and its approval (the config's; else ``never``
        for read-only tools and ``always`` for write tools) filled in."""
        tool_class = self.tool_class
        if tool_class is None:
            tool_class = READ_ONLY if trust_hint and read_only_hint else WRITE
        approval = self.approval or ("never" if tool_class == READ_ONLY else "always")
        return replace(self, tool_class=tool_class, approval=approval)


@dataclass(frozen=True, slots=True)
class HttpToolSpec:
    name: str
    description: str
    parameters: Mapping[str, Any]
    method: str
    url: str
    headers: tuple[tuple[str, str | Secret], ...]
    policy: ToolPolicy


@dataclass(frozen=True, slots=True)
class McpServerSpec:
    """One MCP server. ``env`` and ``headers`` may hold secrets: they go to the server's
    process or requests only, never to a log, the model or a caller."""

    name: str
    transport: str  # "stdio" | "streamable_http"
    command: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str | Secret], ...] = ()
    url: str = ""
    headers: tuple[tuple[str, str | Secret], ...] = ()
    trust_read_only_hint: bool = False
    connect_timeout_s: float = 20.0
    relist_interval_s: float = 60.0
    tools: Mapping[str, ToolPolicy] = field(default_factory=dict)
    defaults: ToolPolicy = field(default_factory=ToolPolicy)

    def policy_of(self, tool: str) -> ToolPolicy:
        return self.tools.get(tool, self.defaults)


@dataclass(frozen=True, slots=True)
class ToolsSpec:
    """Every tool source of one config snapshot."""

    servers: Mapping[str, McpServerSpec] = field(default_factory=dict)
    http: Mapping[str, HttpToolSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """An agent's tool loop: its allowlist (``<server>.<tool>``, ``<server>.*``, an HTTP
    tool's name) and its limits."""

    allow: tuple[str, ...]
    max_steps: int = 8
    parallel: int = 8
    approval_poll_s: float = 0.5


@dataclass(frozen=True, slots=True)
class ServerTool:
    """A tool the server runs, as one agent may call it: ``name`` is what the model sees,
    ``remote_name`` what its source calls it, ``source`` ``mcp:<server>`` or ``http``,
    ``policy`` resolved. ``enabled`` is False while its MCP server is down or changed the
    tool's pinned definition (``disabled_reason`` says which)."""

    name: str
    source: str
    description: str
    parameters: Mapping[str, Any]
    policy: ToolPolicy
    remote_name: str = ""
    digest: str = ""
    enabled: bool = True
    disabled_reason: str = ""

    def as_tool(self) -> Tool:
        return Tool(self.name, self.description, self.parameters)

    @property
    def server(self) -> str:
        """The MCP server's name ("" for an HTTP tool)."""
        return self.source.removeprefix("mcp:") if self.source.startswith("mcp:") else ""
