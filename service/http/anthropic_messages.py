"""Anthropic Messages request ⇄ the contract's request: the Anthropic door's request knowledge.

A body (``POST /v1/messages``, the shape of Anthropic's API reference, "Messages") becomes one
``switchboard.v1.InvokeRequest`` or ``StreamRequest``; the servicer then validates it as it
validates a gRPC call.
``model`` names an agent; ``system`` (a string or text blocks) becomes system messages; a
user message's ``tool_result`` blocks become tool messages, an assistant message's
``tool_use`` blocks its tool calls. ``metadata.user_id`` goes into the call's metadata as
``user`` (as the OpenAI door's ``user``). Extensions: ``session_id`` and ``cache``, as on the
OpenAI door.

``max_tokens`` is required by Anthropic's API. Where the agent lets callers set it, it is sent
as the override; where it does not, the agent's own limit applies, and a ``max_tokens`` under
that limit is refused (the answer could be longer than the caller asked).

A field the contract cannot carry is refused (400 naming it) unless it holds its neutral
value; ``cache_control`` (on the request or a block) is accepted and not carried (a caching
hint: the target's provider decides its prompt caching). ``output_config.format`` (a JSON
schema for the answer) is the contract's ``response_format``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from switchboard.v1 import agent_pb2 as pb

from service.agents.spec import AgentSpec
from service.http.body import (
    AgentCall,
    BadBody,
    extensions,
    model_and_messages,
    number,
    schema_struct,
    string,
)

MAX_BODY_BYTES = 32 * 1024 * 1024  # Anthropic's own limit for the Messages API
# Fields accepted only with their neutral value (what Anthropic does when they are absent).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "top_k": (None,),
    "service_tier": ("auto", "standard_only", None),
    "speed": ("standard", None),
    "inference_geo": (None,),
    "container": (None,),
    "diagnostics": (None,),
    "user_profile_id": (None,),
    "workspace_id": (None,),
}
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "thinking",
        "output_config",
        "cache_control",
        "session_id",
        "cache",
        *_NEUTRAL,
    }
)
_HINTS = frozenset({"cache_control"})  # accepted on any block, not carried


@dataclass
class Paths:
    """Where each contract message and content part came from in the Anthropic body, to
    name the caller's field when the servicer refuses one of them."""

    messages: list[str] = field(default_factory=list)  # "system", "messages[2]"…
    parts: list[list[str]] = field(default_factory=list)  # per message, per content part
    calls: list[list[str]] = field(default_factory=list)  # per message, per tool call

    def add(self, where: str) -> None:
        self.messages.append(where)
        self.parts.append([])
        self.calls.append([])

    def param(self, contract_field: str) -> str:
        """The Anthropic field for the contract's ``contract_field`` (a BadRequest path)."""
        if contract_field == "agent":
            return "model"
        if contract_field.startswith("parameters.response_format"):
            return "output_config.format.schema"
        if contract_field.startswith("parameters."):
            name = contract_field.removeprefix("parameters.")
            return re.sub(r"^stop\b", "stop_sequences", name)
        tool = re.match(r"^tools\[(\d+)\]\.parameters\w*", contract_field)
        if tool:
            return f"tools[{tool.group(1)}].input_schema"
        found = re.match(r"^messages\[(\d+)\](.*)$", contract_field)
        if not found or int(found.group(1)) >= len(self.messages):
            return contract_field
        i, rest = int(found.group(1)), found.group(2)
        if part := re.match(r"^\.content\[(\d+)\](.*)$", rest):
            k = int(part.group(1))
            if k < len(self.parts[i]):
                inner = part.group(2).replace(".image.url", ".source.url")
                return self.parts[i][k] + re.sub(r"^\.image\b", ".source", inner)
        if call := re.match(r"^\.tool_calls\[(\d+)\](.*)$", rest):
            k = int(call.group(1))
            if k < len(self.calls[i]):
                inner = call.group(2).replace(".arguments_json", ".input")
                return self.calls[i][k] + inner
        if rest == ".tool_call_id":  # the message is a tool_result block
            return self.messages[i] + ".tool_use_id"
        return self.messages[i] + rest


def messages_request(
    body: Mapping[str, Any], agent: Callable[[str], AgentSpec | None], *, stream: bool
) -> tuple[AgentCall, Paths]:
    """The contract's request for a Messages body (a StreamRequest when ``stream``, else an
    InvokeRequest), and where its parts came from.

    ``agent`` finds the named agent (None: unknown), for ``max_tokens``.

    Raises:
        BadBody: naming the first field that cannot be carried.
    """
    model, raw_messages = model_and_messages(body, _KNOWN, _NEUTRAL)
    paths = Paths()
    request = (pb.StreamRequest if stream else pb.InvokeRequest)(agent=model)
    _system(body.get("system"), request, paths)
    for i, raw in enumerate(raw_messages):
        _message(raw, f"messages[{i}]", request, paths)
    _tools(body, request)
    _parameters(body, request, agent(model))
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or set(metadata) - {"user_id"}:
            raise BadBody("metadata", "only user_id is supported")
        if (user := metadata.get("user_id")) is not None:
            request.metadata["user"] = string(user, "metadata.user_id")
    extensions(body, request)
    return request, paths


def wants_stream(body: Mapping[str, Any]) -> bool:
    """Raises: BadBody: ``stream`` is not a boolean."""
    stream = body.get("stream", False)
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise BadBody("stream", "must be true or false")
    return stream


def _keys(raw: dict[str, Any], where: str, allowed: set[str]) -> None:
    """Refuse a key of ``raw`` outside ``allowed`` (a null counts as absent: the SDKs dump
    optional fields of a block they returned as null)."""
    for key, value in raw.items():
        if key not in allowed and key not in _HINTS and value is not None:
            raise BadBody(f"{where}.{key}", "not supported by this gateway")


def _system(raw: Any, request: AgentCall, paths: Paths) -> None:
    if raw is None:
        return
    message = pb.Message(role=pb.ROLE_SYSTEM)
    paths.add("system")
    if isinstance(raw, str):
        message.content.add(text=raw)
        paths.parts[-1].append("system")
    elif isinstance(raw, list):
        for i, block in enumerate(raw):
            where = f"system[{i}]"
            if not isinstance(block, dict) or block.get("type") != "text":
                raise BadBody(f"{where}.type", "system blocks are of type 'text'")
            _keys(block, where, {"type", "text"})
            message.content.add(text=string(block.get("text"), f"{where}.text"))
            paths.parts[-1].append(where)
    else:
        raise BadBody("system", "a string or a list of text blocks")
    request.messages.append(message)


def _message(raw: Any, where: str, request: AgentCall, paths: Paths) -> None:
    if not isinstance(raw, dict):
        raise BadBody(where, "a message is an object with a role and content")
    _keys(raw, where, {"role", "content"})
    role = raw.get("role")
    if role not in ("user", "assistant"):
        raise BadBody(f"{where}.role", "one of user, assistant")
    content = raw.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
        blocks = [(f"{where}.content", content[0])]
    elif isinstance(content, list):
        blocks = [(f"{where}.content[{i}]", block) for i, block in enumerate(content)]
    else:
        raise BadBody(f"{where}.content", "a string or a list of content blocks")
    current: pb.Message | None = None
    for at, block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if role == "user" and kind == "tool_result":
            _tool_result(block, at, request, paths)
            current = None
            continue
        if current is None:
            current = request.messages.add(
                role=pb.ROLE_USER if role == "user" else pb.ROLE_ASSISTANT
            )
            paths.add(where)
        index = len(request.messages) - 1
        if role == "assistant" and kind == "tool_use":
            current.tool_calls.append(_tool_use(block, at))
            paths.calls[index].append(at)
            continue
        current.content.append(_part(block, at))
        paths.parts[index].append(at)


def _part(block: Any, where: str) -> pb.ContentPart:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        _keys(block, where, {"type", "text", "citations"})
        if block.get("citations"):
            raise BadBody(f"{where}.citations", "not supported by this gateway")
        return pb.ContentPart(text=string(block.get("text"), f"{where}.text"))
    if kind == "image":
        _keys(block, where, {"type", "source"})
        return pb.ContentPart(image=_image(block.get("source"), f"{where}.source"))
    raise BadBody(f"{where}.type", "a content block of type text, image, tool_use or tool_result")


def _image(source: Any, where: str) -> pb.Image:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url":
        _keys(source, where, {"type", "url"})
        return pb.Image(url=string(source.get("url"), f"{where}.url"))
    if kind == "base64":
        _keys(source, where, {"type", "media_type", "data"})
        data = string(source.get("data"), f"{where}.data")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadBody(f"{where}.data", "not valid base64") from exc
        media_type = string(source.get("media_type"), f"{where}.media_type")
        return pb.Image(data=raw, media_type=media_type)
    raise BadBody(f"{where}.type", "an image source of type base64 or url")


def _tool_use(block: dict[str, Any], where: str) -> pb.ToolCall:
    _keys(block, where, {"type", "id", "name", "input"})
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise BadBody(f"{where}.input", "must be an object")
    return pb.ToolCall(
        id=string(block.get("id"), f"{where}.id"),
        name=string(block.get("name"), f"{where}.name"),
        arguments_json=json.dumps(arguments, separators=(",", ":"), ensure_ascii=False),
    )


def _tool_result(block: dict[str, Any], where: str, request: AgentCall, paths: Paths) -> None:
    _keys(block, where, {"type", "tool_use_id", "content", "is_error"})
    message = request.messages.add(
        role=pb.ROLE_TOOL, tool_call_id=string(block.get("tool_use_id"), f"{where}.tool_use_id")
    )
    paths.add(where)
    parts = paths.parts[-1]
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise BadBody(f"{where}.is_error", "must be true or false")
    if is_error:  # the contract has no flag for it: the model is told in words
        message.content.add(text="(the tool reported an error)")
        parts.append(f"{where}.is_error")
    content = block.get("content", "")
    if isinstance(content, str):
        message.content.add(text=content)
        parts.append(f"{where}.content")
    elif isinstance(content, list):
        for i, inner in enumerate(content):
            message.content.append(_part(inner, f"{where}.content[{i}]"))
            parts.append(f"{where}.content[{i}]")
    else:
        raise BadBody(f"{where}.content", "a string or a list of text and image blocks")


def _tools(body: Mapping[str, Any], request: AgentCall) -> None:
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") != "auto":
            raise BadBody("tool_choice", "only {'type': 'auto'} is supported")
        _keys(choice, "tool_choice", {"type", "disable_parallel_tool_use"})
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadBody("tools", "must be a list")
    for i, raw in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(raw, dict) or raw.get("type", "custom") != "custom":
            raise BadBody(f"{where}.type", "only client tools (name, input_schema) are supported")
        _keys(raw, where, {"type", "name", "description", "input_schema"})
        tool = request.tools.add(
            name=string(raw.get("name"), f"{where}.name"),
            description=string(raw.get("description", ""), f"{where}.description"),
        )
        tool.parameters.CopyFrom(schema_struct(raw.get("input_schema"), f"{where}.input_schema"))


def _parameters(body: Mapping[str, Any], request: AgentCall, spec: AgentSpec | None) -> None:
    thinking = body.get("thinking")
    if thinking is not None and thinking != {"type": "disabled"}:
        raise BadBody("thinking", "extended thinking is not supported by this gateway")
    params = pb.Parameters()
    given = False
    if (temperature := number(body, "temperature")) is not None:
        params.temperature, given = temperature, True
    if (top_p := number(body, "top_p")) is not None:
        params.top_p, given = top_p, True
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadBody("stop_sequences", "a list of strings")
        params.stop.extend(stops)
        given = True
    limit = body.get("max_tokens")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit < 2**31:
        raise BadBody("max_tokens", "a positive integer is required")
    if _caller_sets_max_tokens(spec, limit):
        params.max_tokens, given = limit, True
    if (output := _output_format(body.get("output_config"))) is not None:
        params.response_format.CopyFrom(output)
        given = True
    if given:
        request.parameters.CopyFrom(params)


def _output_format(raw: Any) -> pb.ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadBody("output_config", "must be an object")
    _keys(raw, "output_config", {"format"})
    spec = raw.get("format")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema":
        raise BadBody("output_config.format.type", "only 'json_schema' is supported")
    _keys(spec, "output_config.format", {"type", "schema"})
    schema = schema_struct(spec.get("schema"), "output_config.format.schema")
    return pb.ResponseFormat(
        type=pb.ResponseFormat.TYPE_JSON_SCHEMA, schema_name="output", json_schema=schema
    )


def _caller_sets_max_tokens(spec: AgentSpec | None, limit: int) -> bool:
    """Whether to send the caller's ``max_tokens`` as an override.

    Raises:
        BadBody: the agent does not let callers set it and its own limit is higher.
    """
    if spec is None or "max_tokens" in spec.overridable_parameters:
        return True  # an unknown agent is refused by the servicer (404)
    own = spec.parameters.max_tokens
    if own is not None and limit < own:
        raise BadBody(
            "max_tokens",
            f"agent {spec.name!r} does not let callers set max_tokens and answers with up "
            f"to {own} tokens: send max_tokens of at least {own}",
        )
    return False
