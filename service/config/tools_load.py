"""Server tools' config converted to :mod:`service.tools.spec` (once per snapshot)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from service.config.base import SecretRef
from service.config.tools_model import (
    Condition as ConditionConfig,
)
from service.config.tools_model import (
    HeaderSecret,
    HttpToolConfig,
    LoopConfig,
    McpServerConfig,
    ToolPolicyConfig,
)
from service.secrets import Secret
from service.tools.spec import (
    Condition,
    HttpToolSpec,
    LoopPolicy,
    McpServerSpec,
    ToolPolicy,
    ToolsSpec,
)

ResolveSecret = Callable[[SecretRef, str], Secret]  # (reference, where) → the secret
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in_", "not_in", "matches", "exists")


def tools_spec(
    servers: Mapping[str, McpServerConfig],
    http_tools: Mapping[str, HttpToolConfig],
    *,
    source: str,
    secret: ResolveSecret,
) -> ToolsSpec:
    """Every tool source, secrets resolved. Raises ConfigError (through ``secret``) for a
    secret that cannot be read."""
    base = Path(source).parent
    return ToolsSpec(
        servers={
            name: _server(name, server, base, source, secret) for name, server in servers.items()
        },
        http={
            name: HttpToolSpec(
                name=name,
                description=tool.description,
                parameters=tool.parameters,
                method=tool.method,
                url=tool.url,
                headers=_headers(tool.headers, f"{source}: http_tools.{name}.headers", secret),
                policy=policy(tool),
            )
            for name, tool in http_tools.items()
        },
    )


def _server(
    name: str, server: McpServerConfig, base: Path, source: str, secret: ResolveSecret
) -> McpServerSpec:
    where = f"{source}: mcp_servers.{name}"
    env = tuple(
        (key, value if isinstance(value, str) else secret(value, f"{where}.env.{key}"))
        for key, value in server.env.items()
    )
    return McpServerSpec(
        name=name,
        transport=server.transport,
        command=tuple(server.command),
        cwd=str(base / server.cwd) if server.cwd else None,
        env=env,
        url=server.url or "",
        headers=_headers(server.headers, f"{where}.headers", secret),
        trust_read_only_hint=server.trust_read_only_hint,
        connect_timeout_s=server.connect_timeout_s,
        relist_interval_s=server.relist_interval_s,
        tools={tool: policy(p) for tool, p in server.tools.items()},
        defaults=policy(server.defaults),
    )


def _headers(
    headers: Mapping[str, str | HeaderSecret], where: str, secret: ResolveSecret
) -> tuple[tuple[str, str | Secret], ...]:
    out: list[tuple[str, str | Secret]] = []
    for key, value in headers.items():
        if isinstance(value, str):
            out.append((key, value))
        else:
            resolved = secret(value, f"{where}.{key}")
            out.append((key, Secret(value.prefix + resolved.reveal())))
    return tuple(out)


def policy(config: ToolPolicyConfig) -> ToolPolicy:
    return ToolPolicy(
        tool_class=config.tool_class,
        approval=config.approval,
        when=tuple(_condition(c) for c in config.when),
        timeout_s=config.timeout_s,
        max_result_bytes=config.max_result_bytes,
        concurrency=config.concurrency,
        on_deny=config.on_deny,
        approval_ttl_s=config.approval_ttl_s,
        pin=config.pin,
    )


def _condition(config: ConditionConfig) -> Condition:
    for op in _OPERATORS:
        if op in config.model_fields_set:
            return Condition(tuple(config.arg.split(".")), op.rstrip("_"), getattr(config, op))
    raise AssertionError("validated: one operator")  # pragma: no cover


def loop_policy(allow: list[str], config: LoopConfig) -> LoopPolicy | None:
    """The agent's loop, or None when it lists no server tools (its calls go back to the
    caller, as without a loop)."""
    if not allow:
        return None
    return LoopPolicy(
        allow=tuple(allow),
        max_steps=config.max_steps,
        parallel=config.parallel_tool_calls,
        approval_poll_s=config.approval_poll_s,
    )


def referenced_tool_files(
    servers: Mapping[str, McpServerConfig], http_tools: Mapping[str, HttpToolConfig]
) -> list[str]:
    """Secret files the tool sources read (a reload watches them)."""
    refs: list[SecretRef] = []
    for server in servers.values():
        refs += [v for v in server.env.values() if isinstance(v, SecretRef)]
        refs += [v for v in server.headers.values() if isinstance(v, SecretRef)]
    for tool in http_tools.values():
        refs += [v for v in tool.headers.values() if isinstance(v, SecretRef)]
    return [r.file for r in refs if r.file]
