"""Checks a request against the agent it names. Raises InvalidArgument naming each bad field."""

from __future__ import annotations

import re

from service.agents.spec import AgentSpec
from service.config.model import ServerConfig
from service.context import request_id_problem
from service.domain import AgentRequest, Parameters, ResponseFormatType, Role
from service.errors import FieldViolation, InvalidArgument

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA = 32
MAX_STOP = 4
MAX_STOP_CHARS = 256
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "max_tokens": (1, 1_000_000),
}


def validate(request: AgentRequest, agent: AgentSpec, server: ServerConfig) -> None:
    """Raises InvalidArgument listing every violation, or returns."""
    violations: list[FieldViolation] = []
    violations += _messages(request, server)
    violations += _parameters(request.parameters, agent)
    violations += _tools(request, agent)
    if request.request_id and (problem := request_id_problem(request.request_id)) is not None:
        violations.append(FieldViolation("request_id", problem))
    if len(request.metadata) > MAX_METADATA:
        violations.append(FieldViolation("metadata", f"at most {MAX_METADATA} entries"))
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}", violations)


def _messages(request: AgentRequest, server: ServerConfig) -> list[FieldViolation]:
    messages = request.messages
    if not messages and not request.session_id:
        return [FieldViolation("messages", "at least one message is required")]
    if len(messages) > server.max_messages:
        return [
            FieldViolation(
                "messages", f"{len(messages)} messages is over the limit of {server.max_messages}"
            )
        ]
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in (Role.USER, Role.SYSTEM) and not message.content:
            out.append(FieldViolation(f"{where}.content", "a user or system message needs content"))
        if message.role is Role.ASSISTANT and not (message.content or message.tool_calls):
            out.append(
                FieldViolation(
                    f"{where}.content", "an assistant message needs content or tool calls"
                )
            )
        if message.role is Role.TOOL and not message.tool_call_id:
            out.append(
                FieldViolation(f"{where}.tool_call_id", "a tool message must name its tool call")
            )
        if message.tool_calls and message.role is not Role.ASSISTANT:
            out.append(
                FieldViolation(f"{where}.tool_calls", "only assistant messages make tool calls")
            )
    return out


def _parameters(parameters: Parameters, agent: AgentSpec) -> list[FieldViolation]:
    out = []
    for name in parameters.set_fields():
        if name not in agent.overridable_parameters:
            allowed = ", ".join(sorted(agent.overridable_parameters)) or "none"
            out.append(
                FieldViolation(
                    f"parameters.{name}",
                    f"agent {agent.name!r} does not allow overriding {name} (allowed: {allowed})",
                )
            )
    for name, (low, high) in _RANGES.items():
        value = getattr(parameters, name)
        if value is not None and not low <= value <= high:
            out.append(
                FieldViolation(f"parameters.{name}", f"{value} is out of range [{low:g}, {high:g}]")
            )
    if len(parameters.stop) > MAX_STOP:
        out.append(FieldViolation("parameters.stop", f"at most {MAX_STOP} stop sequences"))
    for i, stop in enumerate(parameters.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            out.append(FieldViolation(f"parameters.stop[{i}]", f"1 to {MAX_STOP_CHARS} characters"))
    fmt = parameters.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA:
        if not fmt.json_schema:
            out.append(
                FieldViolation(
                    "parameters.response_format.json_schema", "required for TYPE_JSON_SCHEMA"
                )
            )
        if not fmt.schema_name:
            out.append(
                FieldViolation(
                    "parameters.response_format.schema_name", "required for TYPE_JSON_SCHEMA"
                )
            )
    return out


def _tools(request: AgentRequest, agent: AgentSpec) -> list[FieldViolation]:
    if not request.tools:
        return []
    if not agent.accepts_caller_tools:
        return [FieldViolation("tools", f"agent {agent.name!r} does not accept caller tools")]
    out = []
    taken = {t.name for t in agent.tools}
    for i, tool in enumerate(request.tools):
        if not _TOOL_NAME.match(tool.name):
            out.append(FieldViolation(f"tools[{i}].name", "1 to 64 letters, digits, '_' or '-'"))
        elif tool.name in taken:
            out.append(FieldViolation(f"tools[{i}].name", f"tool {tool.name!r} is declared twice"))
        taken.add(tool.name)
    return out
