"""Protobuf ⇄ domain conversion. The only place (with the servicers) that knows the wire types.

Structural problems (a missing role, an empty content part) are collected and raised as one
InvalidArgument naming every bad field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import struct_pb2
from switchboard.v1 import agent_pb2 as pb

from service.agents.spec import AgentSpec
from service.api import tool_events
from service.api.structs import json_object, struct_to_dict
from service.context import request_id_problem
from service.domain import (
    AgentRequest,
    AgentResponse,
    ApprovalRequiredEvent,
    ContentPart,
    Event,
    Finish,
    FinishReason,
    GuardVerdict,
    ImagePart,
    Message,
    Parameters,
    ResponseFormat,
    ResponseFormatType,
    Role,
    Start,
    StepFinish,
    TargetRef,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolResultEvent,
    Usage,
    UsageEvent,
)
from service.errors import FieldViolation, InvalidArgument
from service.tools.spec import ServerTool

_ROLES = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
    pb.ROLE_TOOL: Role.TOOL,
}
_ROLES_OUT = {v: k for k, v in _ROLES.items()}
# Callers' JSON schemas (a tool's parameters, a response format): each, and all of them in
# one request, at most this many bytes as protobuf. Real tool schemas are a few KiB; OpenAI's
# structured outputs cap a schema's names and enum values at 120,000 characters in all.
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMAS_BYTES = 256 * 1024
# A body bigger than this is converted in a worker thread (see the servicer).
BIG_BODY_BYTES = 64 * 1024
_FORMATS = {
    pb.ResponseFormat.TYPE_TEXT: ResponseFormatType.TEXT,
    pb.ResponseFormat.TYPE_JSON_OBJECT: ResponseFormatType.JSON_OBJECT,
    pb.ResponseFormat.TYPE_JSON_SCHEMA: ResponseFormatType.JSON_SCHEMA,
}
_FORMATS_OUT = {v: k for k, v in _FORMATS.items()}
_FINISH = tool_events.FINISH
_NO_PARAMETERS = Parameters()  # a request's when it sets none (frozen: one serves all)


def request_from_proto(
    msg: pb.InvokeRequest | pb.StreamRequest, request_id: str, *, max_messages: int | None = None
) -> AgentRequest:
    """The domain request; ``request_id`` is used when the caller sent none. CPU-bound in
    the body's size (call it off the event loop for a big body: :data:`BIG_BODY_BYTES`).

    Raises:
        InvalidArgument: naming every structurally bad field; more than ``max_messages``
            messages, or a JSON schema over :data:`MAX_SCHEMA_BYTES` (or all of them over
            :data:`MAX_SCHEMAS_BYTES`), is refused before any of it is converted.
    """
    violations: list[FieldViolation] = []
    if not msg.agent:
        violations.append(FieldViolation("agent", "the agent name is required"))
    if max_messages is not None and len(msg.messages) > max_messages:
        count = len(msg.messages)
        raise InvalidArgument.field(
            "messages", f"{count} messages is over the limit of {max_messages}"
        )
    _schema_sizes(msg)
    messages = tuple([_message(m, i, violations) for i, m in enumerate(msg.messages)])
    # Empty fields (most requests: no tools, parameters, metadata) are not iterated.
    tools = (
        tuple([_tool(t, f"tools[{i}]", violations) for i, t in enumerate(msg.tools)])
        if msg.tools
        else ()
    )
    parameters = (
        _parameters(msg.parameters, violations) if msg.HasField("parameters") else _NO_PARAMETERS
    )
    # Checked here, where it enters: it is the idempotency key, and goes into logs and audit.
    if msg.request_id and (problem := request_id_problem(msg.request_id)) is not None:
        violations.append(FieldViolation("request_id", problem))
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(f"{first.field}: {first.description}{more}", violations)
    return AgentRequest(
        agent=msg.agent,
        messages=messages,
        request_id=msg.request_id or request_id,
        session_id=msg.session_id,
        parameters=parameters,
        metadata=dict(msg.metadata) if msg.metadata else {},
        tools=tools,
        cache=msg.cache if msg.HasField("cache") else None,
    )


def messages_from_proto(messages: Iterable[pb.Message]) -> tuple[Message, ...]:
    """Messages alone (RunService.ResumeRun's).

    Raises:
        InvalidArgument: naming every structurally bad field.
    """
    violations: list[FieldViolation] = []
    out = tuple([_message(m, i, violations) for i, m in enumerate(messages)])
    if violations:
        first = violations[0]
        raise InvalidArgument(f"{first.field}: {first.description}", violations)
    return out


def _schema_sizes(msg: pb.InvokeRequest | pb.StreamRequest) -> None:
    """Refuse schemas too big to check cheaply (``check_schema`` is pure Python: about 5 ms
    a KiB), before converting any of them."""
    if not msg.tools and not msg.HasField("parameters"):
        return  # no schema (most requests)
    sizes = {
        f"tools[{i}].parameters": t.parameters.ByteSize()
        for i, t in enumerate(msg.tools)
        if t.HasField("parameters")
    }
    # A schema sent as JSON text counts by its UTF-8 length (it is parsed, then checked alike).
    sizes.update(
        (f"tools[{i}].parameters_json", len(t.parameters_json.encode()))
        for i, t in enumerate(msg.tools)
        if t.parameters_json
    )
    fmt = msg.parameters.response_format
    if fmt.HasField("json_schema"):
        sizes["parameters.response_format.json_schema"] = fmt.json_schema.ByteSize()
    if fmt.json_schema_json:
        sizes["parameters.response_format.json_schema_json"] = len(fmt.json_schema_json.encode())
    violations = [
        FieldViolation(where, f"a JSON schema of at most {MAX_SCHEMA_BYTES} bytes, not {size}")
        for where, size in sizes.items()
        if size > MAX_SCHEMA_BYTES
    ]
    if not violations and (total := sum(sizes.values())) > MAX_SCHEMAS_BYTES:
        violations.append(
            FieldViolation(
                "tools", f"JSON schemas of at most {MAX_SCHEMAS_BYTES} bytes in all, not {total}"
            )
        )
    if violations:
        first = violations[0]
        raise InvalidArgument(f"{first.field}: {first.description}", violations)


def _message(msg: pb.Message, index: int, violations: list[FieldViolation]) -> Message:
    """``msg``, the request's ``messages[index]``."""
    role = _ROLES.get(msg.role)
    if role is None:
        problem = "is required" if msg.role == pb.ROLE_UNSPECIFIED else f"{msg.role} is unknown"
        violations.append(
            FieldViolation(
                f"messages[{index}].role",
                f"role {problem} (ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL)",
            )
        )
        role = Role.USER
    parts: list[ContentPart] = []
    for j, part in enumerate(msg.content):
        kind = part.WhichOneof("part")
        if kind == "text":
            parts.append(TextPart(part.text))
        elif kind == "image":
            parts.append(_image(part.image, f"messages[{index}].content[{j}].image", violations))
        else:
            violations.append(
                FieldViolation(f"messages[{index}].content[{j}]", "set text or image")
            )
    calls = (
        tuple([ToolCall(c.id, c.name, c.arguments_json) for c in msg.tool_calls])
        if msg.tool_calls
        else ()
    )
    return Message(role, tuple(parts), calls, msg.tool_call_id)


def _image(image: pb.Image, where: str, violations: list[FieldViolation]) -> ImagePart:
    source = image.WhichOneof("source")
    if source is None:
        violations.append(FieldViolation(where, "set url or data"))
    elif source == "url" and not image.url:
        violations.append(FieldViolation(f"{where}.url", "is empty"))
    elif source == "data" and not image.data:
        violations.append(FieldViolation(f"{where}.data", "is empty"))
    elif source == "data" and not image.media_type:
        violations.append(FieldViolation(f"{where}.media_type", "required with inline data"))
    return ImagePart(url=image.url, data=image.data, media_type=image.media_type)


def _tool(msg: pb.Tool, where: str, violations: list[FieldViolation]) -> Tool:
    parameters = _schema(
        msg.parameters if msg.HasField("parameters") else None,
        msg.parameters_json,
        f"{where}.parameters",
        violations,
    )
    return Tool(name=msg.name, description=msg.description, parameters=parameters or {})


def _schema(
    struct: struct_pb2.Struct | None, text: str, where: str, violations: list[FieldViolation]
) -> dict[str, Any] | None:
    """A schema sent as a Struct (``where``) or as JSON text (``where`` + ``_json``)."""
    if struct is not None and text:
        violations.append(
            FieldViolation(f"{where}_json", f"set {where.rpartition('.')[2]} or this, not both")
        )
        return None
    if text:
        return json_object(text, f"{where}_json", violations)
    if struct is not None:
        return struct_to_dict(struct, where, violations)
    return None


def _parameters(msg: pb.Parameters, violations: list[FieldViolation]) -> Parameters:
    fmt: ResponseFormat | None = None
    if msg.HasField("response_format"):
        kind = _FORMATS.get(msg.response_format.type)
        if kind is None:
            violations.append(
                FieldViolation(
                    "parameters.response_format.type",
                    "set TYPE_TEXT, TYPE_JSON_OBJECT or TYPE_JSON_SCHEMA",
                )
            )
        else:
            given = msg.response_format
            fmt = ResponseFormat(
                type=kind,
                schema_name=given.schema_name,
                json_schema=_schema(
                    given.json_schema if given.HasField("json_schema") else None,
                    given.json_schema_json,
                    "parameters.response_format.json_schema",
                    violations,
                ),
                strict=given.strict,
            )
    return Parameters(
        temperature=msg.temperature if msg.HasField("temperature") else None,
        max_tokens=msg.max_tokens if msg.HasField("max_tokens") else None,
        top_p=msg.top_p if msg.HasField("top_p") else None,
        stop=tuple(msg.stop),
        seed=msg.seed if msg.HasField("seed") else None,
        response_format=fmt,
    )


def parameters_to_proto(parameters: Parameters) -> pb.Parameters:
    out = pb.Parameters(
        temperature=parameters.temperature,
        max_tokens=parameters.max_tokens,
        top_p=parameters.top_p,
        stop=parameters.stop,
        seed=parameters.seed,
    )
    fmt = parameters.response_format
    if fmt is not None:
        out.response_format.type = _FORMATS_OUT[fmt.type]
        out.response_format.schema_name = fmt.schema_name
        out.response_format.strict = fmt.strict
        if fmt.json_schema is not None:
            out.response_format.json_schema.update(fmt.json_schema)
    return out


def _struct(value: object) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if isinstance(value, dict):
        out.update(value)
    return out


def target_to_proto(target: TargetRef) -> pb.Target:
    out = pb.Target()
    _fill_target(out, target)
    return out


def usage_to_proto(usage: Usage) -> pb.Usage:
    out = pb.Usage()
    _fill_usage(out, usage)
    return out


def message_to_proto(message: Message) -> pb.Message:
    out = pb.Message()
    _fill_message(out, message)
    return out


# Filling a message's fields in place costs about a third of building each sub-message and
# handing it to its parent's constructor (which copies it): measured on an Invoke's answer.


def _fill_target(out: pb.Target, target: TargetRef) -> None:
    out.SetInParent()  # present even when empty, as a constructor's argument would be
    out.name = target.name
    out.provider = target.provider
    out.model = target.model


def _fill_usage(out: pb.Usage, usage: Usage) -> None:
    out.SetInParent()
    out.input_tokens = usage.input_tokens
    out.output_tokens = usage.output_tokens
    out.total_tokens = usage.total_tokens
    out.cached_input_tokens = usage.cached_input_tokens
    out.cost_usd = usage.cost_usd
    out.cache_creation_5m_input_tokens = usage.cache_creation_5m_input_tokens
    out.cache_creation_1h_input_tokens = usage.cache_creation_1h_input_tokens
    out.reasoning_tokens = usage.reasoning_tokens
    out.estimated = usage.estimated


def _fill_message(out: pb.Message, message: Message) -> None:
    out.SetInParent()
    out.role = _ROLES_OUT[message.role]
    for p in message.content:
        if isinstance(p, TextPart):
            out.content.add(text=p.text)
        else:
            out.content.add(image=_image_to_proto(p))
    if message.tool_calls:
        out.tool_calls.extend(
            [
                pb.ToolCall(id=c.id, name=c.name, arguments_json=c.arguments_json)
                for c in message.tool_calls
            ]
        )
    out.tool_call_id = message.tool_call_id


def _image_to_proto(image: ImagePart) -> pb.Image:
    out = pb.Image(media_type=image.media_type)
    if image.data:
        out.data = image.data
    else:
        out.url = image.url
    return out


def response_to_proto(response: AgentResponse) -> pb.InvokeResponse:
    out = pb.InvokeResponse(
        request_id=response.request_id,
        finish_reason=_FINISH[response.finish_reason],
        agent=response.agent,
        agent_version=response.agent_version,
        attempts=response.attempts,
        cache_hit=response.cache_hit,
        run_id=response.run_id,
    )
    _fill_message(out.message, response.message)
    _fill_usage(out.usage, response.usage)
    _fill_target(out.target, response.target)
    if response.verdicts:
        out.guard_verdicts.extend(verdicts_to_proto(response.verdicts))
    if response.steps:
        out.steps.extend([tool_events.step_to_proto(s) for s in response.steps])
    return out


def verdicts_to_proto(verdicts: Iterable[GuardVerdict]) -> list[pb.GuardVerdict]:
    return [
        pb.GuardVerdict(
            guard=v.guard, stage=v.stage, category=v.category, action=v.action, count=v.count
        )
        for v in verdicts
    ]


def event_to_proto(event: Event) -> pb.StreamResponse:
    match event:
        case TextDelta(text=text, step_id=step_id):
            out = pb.StreamResponse()  # filled in place: about half the cost (see _fill_target)
            delta = out.text_delta
            delta.SetInParent()
            delta.text = text
            delta.step_id = step_id
            return out
        case ToolCallDelta():
            return pb.StreamResponse(
                tool_call_delta=pb.ToolCallDelta(
                    index=event.index,
                    id=event.id,
                    name=event.name,
                    arguments_delta=event.arguments_delta,
                    step_id=event.step_id,
                )
            )
        case UsageEvent(usage=usage):
            return pb.StreamResponse(usage=usage_to_proto(usage))
        case Start():
            return pb.StreamResponse(
                start=pb.StreamStart(
                    request_id=event.request_id,
                    agent=event.agent,
                    agent_version=event.agent_version,
                    target=target_to_proto(event.target) if event.target.name else None,
                    run_id=event.run_id,
                )
            )
        case Finish():
            return pb.StreamResponse(
                finish=pb.StreamFinish(
                    finish_reason=_FINISH[event.reason],
                    attempts=event.attempts,
                    cache_hit=event.cache_hit,
                    guard_verdicts=verdicts_to_proto(event.verdicts),
                    target=target_to_proto(event.target) if event.target else None,
                    run_id=event.run_id,
                )
            )
        case ToolResultEvent():
            return pb.StreamResponse(tool_result=tool_events.tool_result_to_proto(event))
        case ApprovalRequiredEvent():
            return pb.StreamResponse(
                approval_required=tool_events.approval_required_to_proto(event)
            )
        case StepFinish():
            return pb.StreamResponse(step_finish=tool_events.step_finish_to_proto(event))


def agent_to_proto(agent: AgentSpec, server_tools: Iterable[ServerTool] = ()) -> pb.Agent:
    """``agent`` as the contract's Agent; ``server_tools``: the tools the server runs for it
    (as they stand now: a tool whose MCP server is down or changed it is not enabled)."""
    return pb.Agent(
        name=agent.name,
        description=agent.description,
        version=agent.version,
        route=[target_to_proto(t.ref) for t in agent.route],
        default_parameters=parameters_to_proto(agent.parameters),
        overridable_parameters=sorted(agent.overridable_parameters),
        tools=[
            pb.Tool(name=t.name, description=t.description, parameters=_struct(t.parameters))
            for t in agent.tools
        ],
        accepts_caller_tools=agent.accepts_caller_tools,
        kind=pb.AGENT_KIND_AGENT,
        server_tools=[
            pb.ServerTool(
                tool=pb.Tool(
                    name=t.name, description=t.description, parameters=_struct(t.parameters)
                ),
                source=t.source,
                tool_class=t.policy.tool_class or "write",
                approval=t.policy.approval or "always",
                enabled=t.enabled,
            )
            for t in sorted(server_tools, key=lambda t: t.name)
        ],
        max_steps=agent.loop.max_steps if agent.loop is not None else 0,
    )


def finish_reason_to_proto(reason: FinishReason) -> pb.FinishReason.ValueType:
    return _FINISH[reason]
