"""Config sections of server tools (README, Tools): ``mcp_servers``, ``http_tools``, the
policy of each tool, and an agent's ``server_tools`` allowlist.

A tool that writes never runs without a policy that allows it: a tool the config does not
class is ``write`` (unless its server is trusted to say ``readOnlyHint``), and a ``write``
tool's approval defaults to ``always``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from service.config.base import FrozenModel, SecretRef
from service.schemas import schema_problem

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PIN = re.compile(r"^sha256:[0-9a-f]{64}$")
KiB = 1024


class HeaderSecret(SecretRef):
    """A header's value from a secret (env or file), with an optional ``prefix`` such as
    ``"Bearer "``."""

    prefix: str = ""


class Condition(FrozenModel):
    """One test on the call's arguments: ``arg`` is a dotted path into them; exactly one
    operator is set. A missing argument fails every operator but ``exists: false``."""

    arg: str = Field(min_length=1, max_length=256)
    eq: Any = None
    ne: Any = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    in_: list[Any] | None = Field(None, alias="in")
    not_in: list[Any] | None = None
    matches: str | None = Field(None, description="an RE2 regular expression, searched")
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        given = [
            name
            for name in ("eq", "ne", "gt", "ge", "lt", "le", "in_", "not_in", "matches", "exists")
            if name in self.model_fields_set
        ]
        if len(given) != 1:
            raise ValueError(
                "give exactly one operator: eq, ne, gt, ge, lt, le, in, not_in, matches, exists"
            )
        return self


class ToolPolicyConfig(FrozenModel):
    """What a tool may do and how it runs."""

    tool_class: Literal["read_only", "write"] | None = Field(
        None,
        alias="class",
        description="unset: write (or the MCP readOnlyHint where the server is trusted)",
    )
    approval: Literal["never", "always", "when"] | None = Field(
        None, description="unset: never for read_only tools, always for write tools"
    )
    when: list[Condition] = Field(
        default_factory=list, description="approval 'when': needed if any condition holds"
    )
    timeout_s: float = Field(30.0, gt=0, le=3600)
    max_result_bytes: int = Field(64 * KiB, ge=1, le=64 * 1024 * KiB)
    concurrency: int = Field(8, ge=1, le=1024, description="calls at once, per process")
    on_deny: Literal["refuse", "fail"] = Field(
        "refuse", description="refuse: the model gets a refusal; fail: PERMISSION_DENIED"
    )
    approval_ttl_s: float = Field(
        86400.0, gt=0, le=30 * 86400, description="a pending approval expires after this"
    )
    pin: str | None = Field(
        None, description="an MCP tool's accepted definition hash (sha256:<hex>)"
    )

    @model_validator(mode="after")
    def _when_with_conditions(self) -> ToolPolicyConfig:
        if (self.approval == "when") != bool(self.when):
            raise ValueError("approval 'when' needs 'when' conditions, and only it takes them")
        if self.pin is not None and not PIN.match(self.pin):
            raise ValueError("pin: sha256: and 64 lowercase hex digits")
        return self


class McpServerConfig(FrozenModel):
    """An MCP server: a command Switchboard starts and supervises (stdio), or a URL
    (streamable HTTP)."""

    transport: Literal["stdio", "streamable_http"]
    command: list[str] = Field(default_factory=list, description="stdio: the argv")
    cwd: str | None = Field(None, description="stdio: relative to the config file")
    env: dict[str, str | SecretRef] = Field(
        default_factory=dict, description="stdio: extra environment (values or secrets)"
    )
    url: str | None = Field(None, pattern=r"^https?://\S+$")
    headers: dict[str, str | HeaderSecret] = Field(default_factory=dict)
    trust_read_only_hint: bool = Field(
        False, description="class unlisted tools by their readOnlyHint annotation"
    )
    connect_timeout_s: float = Field(20.0, gt=0, le=600)
    relist_interval_s: float = Field(
        60.0, gt=0, description="re-read tools/list this often (rug-pull detection)"
    )
    tools: dict[str, ToolPolicyConfig] = Field(
        default_factory=dict, description="policy per tool, by the server's tool name"
    )
    defaults: ToolPolicyConfig = Field(
        default_factory=ToolPolicyConfig, description="policy of tools not listed"
    )

    @model_validator(mode="after")
    def _transport_needs(self) -> McpServerConfig:
        if self.transport == "stdio" and not self.command:
            raise ValueError("transport 'stdio' needs a command (a list: program and args)")
        if self.transport == "streamable_http" and not self.url:
            raise ValueError("transport 'streamable_http' needs a url")
        if self.transport == "stdio" and (self.url or self.headers):
            raise ValueError("url and headers apply only to transport 'streamable_http'")
        if self.transport == "streamable_http" and (self.command or self.env or self.cwd):
            raise ValueError("command, env and cwd apply only to transport 'stdio'")
        for name in self.tools:
            if not TOOL_NAME.match(name):
                raise ValueError(f"tools.{name}: tool names are letters, digits, '_', '-'")
        return self


class HttpToolConfig(ToolPolicyConfig):
    """A tool that is one HTTP request: ``url`` is a template whose ``{name}`` fields are
    filled (percent-encoded) from the arguments; the other arguments go in the query
    (GET, DELETE) or as the JSON body (POST, PUT, PATCH)."""

    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(pattern=r"^https?://\S+$")
    headers: dict[str, str | HeaderSecret] = Field(default_factory=dict)

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type", "object") != "object":
            raise ValueError("the arguments' schema must be of type object")
        if (problem := schema_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _no_pin(self) -> HttpToolConfig:
        if self.pin is not None:
            raise ValueError("pin applies to MCP tools only")
        return self


class LoopConfig(FrozenModel):
    """An agent's tool loop."""

    max_steps: int = Field(8, ge=1, le=100, description="most model steps in one run")
    parallel_tool_calls: int = Field(
        8, ge=1, le=64, description="tool calls of one step run at once"
    )
    approval_poll_s: float = Field(
        0.5, gt=0, le=30, description="how often a waiting run checks the shared store"
    )


def check_tool_references(
    servers: dict[str, McpServerConfig],
    http_tools: dict[str, HttpToolConfig],
    agents: dict[str, list[str]],
) -> None:
    """Every agent's ``server_tools`` entry names a known source: ``<server>.<tool>``,
    ``<server>.*`` or an HTTP tool's name.

    Raises:
        ValueError: naming the agent and the entry.
    """
    for name in [*servers, *http_tools]:
        if not TOOL_NAME.match(name):
            raise ValueError(f"{name}: tool source names are letters, digits, '_', '-'")
    both = set(servers) & set(http_tools)
    if both:
        raise ValueError(f"{min(both)}: an MCP server and an HTTP tool share this name")
    for agent, entries in agents.items():
        for i, entry in enumerate(entries):
            server, dot, tool = entry.partition(".")
            if dot:
                if server not in servers:
                    raise ValueError(
                        f"agents.{agent}.server_tools[{i}]: no MCP server named {server!r} "
                        f"(mcp_servers: {', '.join(sorted(servers)) or 'none'})"
                    )
                if tool != "*" and not TOOL_NAME.match(tool):
                    raise ValueError(
                        f"agents.{agent}.server_tools[{i}]: '<server>.<tool>' or '<server>.*'"
                    )
            elif entry not in http_tools:
                raise ValueError(
                    f"agents.{agent}.server_tools[{i}]: no HTTP tool named {entry!r}; an MCP "
                    "server's tools are '<server>.<tool>' or '<server>.*'"
                )
