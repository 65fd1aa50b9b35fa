"""Checks a request against the contract and the agent it names. Raises InvalidArgument
naming each bad field.

Bounds that come from elsewhere: tool and schema names follow OpenAI's function-name rule
(``^[a-zA-Z0-9_-]{1,64}$``); metadata keys and values follow OpenAI's metadata limits (keys
at most 64 characters, values at most 512).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from service.agents.image_url import url_problem
from service.agents.spec import AgentSpec
from service.config.model import ServerConfig
from service.context import request_id_problem
from service.domain import AgentRequest, ImagePart, Message, Parameters, ResponseFormatType, Role
from service.echo import echo
from service.errors import FieldViolation, InvalidArgument
from service.schemas import Schemas
from service.sessions.history import session_id_problem

# fullmatch, not "^...$": "$" matches before a final newline, so "t1\n" passed.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_METADATA = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_TOOLS = 128
MAX_STOP = 4
MAX_STOP_CHARS = 256
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "max_tokens": (1, 1_000_000),
}


def validate(
    request: AgentRequest, agent: AgentSpec, server: ServerConfig, schemas: Schemas
) -> None:
    """Raises InvalidArgument listing every violation, or returns. CPU-bound: see
    :func:`heavy`."""
    violations: list[FieldViolation] = []
    violations += _messages(request, server)
    violations += _parameters(request.parameters, agent, schemas)
    violations += _tools(request, agent, schemas)
    if request.request_id and (problem := request_id_problem(request.request_id)) is not None:
        violations.append(FieldViolation("request_id", problem))
    if request.session_id and (problem := session_id_problem(request.session_id)) is not None:
        violations.append(FieldViolation("session_id", problem))
    violations += _metadata(request)
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
    # Tool calls made earlier in this request; a session's history may hold more.
    calls: set[str] | None = None if request.session_id else set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        out += _images(message, where)
        out += _tool_calls(message, where)
        if calls is not None:
            calls.update(c.id for c in message.tool_calls)
            if (
                message.role is Role.TOOL
                and message.tool_call_id
                and (message.tool_call_id not in calls)
            ):
                out.append(
                    FieldViolation(
                        f"{where}.tool_call_id",
                        f"{echo(message.tool_call_id)} answers no earlier tool call",
                    )
                )
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


# The inline image types both Anthropic's Messages API and OpenAI's Chat Completions take.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def _images(message: Message, where: str) -> list[FieldViolation]:
    out = []
    for j, part in enumerate(message.content):
        if not isinstance(part, ImagePart):
            continue
        if part.url and (problem := url_problem(part.url)):
            out.append(FieldViolation(f"{where}.content[{j}].image.url", problem))
        if part.data and part.media_type and part.media_type not in IMAGE_TYPES:
            out.append(
                FieldViolation(
                    f"{where}.content[{j}].image.media_type", f"one of {', '.join(IMAGE_TYPES)}"
                )
            )
    return out


def _tool_calls(message: Message, where: str) -> list[FieldViolation]:
    out = []
    for j, call in enumerate(message.tool_calls):
        at = f"{where}.tool_calls[{j}]"
        if not call.id:
            out.append(FieldViolation(f"{at}.id", "the tool call's id is required"))
        if not _TOOL_NAME.fullmatch(call.name):
            out.append(FieldViolation(f"{at}.name", "1 to 64 letters, digits, '_' or '-'"))
        if call.arguments_json and not _is_object(call.arguments_json):
            out.append(FieldViolation(f"{at}.arguments_json", "must be the JSON text of an object"))
    return out


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _metadata(request: AgentRequest) -> list[FieldViolation]:
    if len(request.metadata) > MAX_METADATA:
        return [FieldViolation("metadata", f"at most {MAX_METADATA} entries")]
    out = []
    for key, value in request.metadata.items():
        if not key or len(key) > MAX_METADATA_KEY or not key.isprintable():
            out.append(
                FieldViolation(
                    "metadata",
                    f"key {echo(key)}: 1 to {MAX_METADATA_KEY} printable characters",
                )
            )
        elif len(value) > MAX_METADATA_VALUE:
            out.append(
                FieldViolation(f"metadata[{key}]", f"at most {MAX_METADATA_VALUE} characters")
            )
    return out


def schemas_of(request: AgentRequest) -> list[Mapping[str, Any]]:
    """The JSON schemas a request brings (its tools', its response format's)."""
    out = [t.parameters for t in request.tools if t.parameters]
    fmt = request.parameters.response_format
    if fmt is not None and fmt.json_schema:
        out.append(fmt.json_schema)
    return out


HEAVY_ITEMS = 2000


def heavy(request: AgentRequest, schemas: Schemas) -> bool:
    """Whether validating ``request`` may take long enough to stall the event loop: a schema
    not checked before (``check_schema`` is pure Python), or thousands of parts."""
    items = len(request.messages) + sum(len(m.content) for m in request.messages)
    return items > HEAVY_ITEMS or schemas.unchecked(schemas_of(request))


def _parameters(parameters: Parameters, agent: AgentSpec, schemas: Schemas) -> list[FieldViolation]:
    if parameters.unset():
        return []  # every check below is of a field that is set
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
        elif (problem := schemas.problem(fmt.json_schema)) is not None:
            out.append(FieldViolation("parameters.response_format.json_schema", problem))
        if not fmt.schema_name:
            out.append(
                FieldViolation(
                    "parameters.response_format.schema_name", "required for TYPE_JSON_SCHEMA"
                )
            )
        elif not _TOOL_NAME.fullmatch(fmt.schema_name):
            out.append(
                FieldViolation(
                    "parameters.response_format.schema_name",
                    "1 to 64 letters, digits, '_' or '-'",
                )
            )
    return out


def _tools(request: AgentRequest, agent: AgentSpec, schemas: Schemas) -> list[FieldViolation]:
    if not request.tools:
        return []
    if not agent.accepts_caller_tools:
        return [FieldViolation("tools", f"agent {agent.name!r} does not accept caller tools")]
    if len(request.tools) + len(agent.tools) > MAX_TOOLS:
        return [FieldViolation("tools", f"at most {MAX_TOOLS} tools, the agent's included")]
    out = []
    taken = {t.name for t in agent.tools}
    for i, tool in enumerate(request.tools):
        if not _TOOL_NAME.fullmatch(tool.name):
            out.append(FieldViolation(f"tools[{i}].name", "1 to 64 letters, digits, '_' or '-'"))
        elif tool.name in taken:
            out.append(FieldViolation(f"tools[{i}].name", f"tool {tool.name!r} is declared twice"))
        taken.add(tool.name)
        if tool.parameters:
            if tool.parameters.get("type", "object") != "object":
                out.append(
                    FieldViolation(
                        f"tools[{i}].parameters", "the arguments' schema must be of type object"
                    )
                )
            elif (problem := schemas.problem(tool.parameters)) is not None:
                out.append(FieldViolation(f"tools[{i}].parameters", problem))
    return out
