"""OpenAI Chat Completions ⇄ the contract's messages: the OpenAI door's only wire knowledge.

A request body (``POST /v1/chat/completions``, the shape of OpenAI's API reference, "Create
chat completion") becomes one ``switchboard.v1.InvokeRequest`` or ``StreamRequest``; the
servicer then validates it exactly as it validates a gRPC call. An answer becomes a
``chat.completion`` object, a stream's events ``chat.completion.chunk`` objects.

``model`` names an agent. Fields are read as OpenAI defines them; ``max_completion_tokens``
wins over the older ``max_tokens``; ``user`` goes into the call's metadata. Extensions
(sent by the OpenAI SDK as ``extra_body``): ``session_id`` (a Switchboard session),
``cache`` (bool, the response cache), ``metadata`` (string map, as OpenAI's). A field the
contract cannot carry is refused (400 naming it) unless it holds its neutral value, so no
caller loses a setting silently.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from switchboard.v1 import agent_pb2 as pb

from service.http.body import (
    AgentCall,
    BadBody,
    extensions,
    integer,
    model_and_messages,
    number,
    schema_struct,
    string,
)

MAX_BODY_BYTES = 4 * 1024 * 1024
_ROLES = {
    "system": pb.ROLE_SYSTEM,
    "developer": pb.ROLE_SYSTEM,
    "user": pb.ROLE_USER,
    "assistant": pb.ROLE_ASSISTANT,
    "tool": pb.ROLE_TOOL,
}
_FORMATS = {
    "text": pb.ResponseFormat.TYPE_TEXT,
    "json_object": pb.ResponseFormat.TYPE_JSON_OBJECT,
    "json_schema": pb.ResponseFormat.TYPE_JSON_SCHEMA,
}
FINISH_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: "stop",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
    pb.FINISH_REASON_CONTENT_FILTER: "content_filter",
    # A tool loop's ends that OpenAI has no word for: the answer so far, stopped.
    pb.FINISH_REASON_APPROVAL_PENDING: "stop",
    pb.FINISH_REASON_MAX_STEPS: "length",
}
# Fields accepted only with their neutral value (what OpenAI does when they are absent).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "logprobs": (False, None),
    "top_logprobs": (0, None),
    "parallel_tool_calls": (True, False, None),
    "store": (False, None),
    "service_tier": ("auto", "default", None),
    "tool_choice": ("auto", None),
}
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "response_format",
        "tools",
        "user",
        "metadata",
        "session_id",
        "cache",
        *_NEUTRAL,
    }
)


def chat_request(body: Mapping[str, Any], *, stream: bool) -> AgentCall:
    """The contract's request for a Chat Completions body: a StreamRequest when ``stream``,
    else an InvokeRequest.

    Raises:
        BadBody: naming the first field that cannot be carried.
    """
    model, messages = model_and_messages(body, _KNOWN, _NEUTRAL)
    kind = pb.StreamRequest if stream else pb.InvokeRequest
    request = kind(
        agent=model, messages=[_message(m, f"messages[{i}]") for i, m in enumerate(messages)]
    )
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadBody("tools", "must be a list")
        request.tools.extend(_tool(t, f"tools[{i}]") for i, t in enumerate(tools))
    _parameters(body, request)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise BadBody("metadata", "must be an object of strings")
        request.metadata.update(metadata)
    user = body.get("user")
    if user is not None:
        request.metadata["user"] = string(user, "user")
    extensions(body, request)
    return request


def wants_stream(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) as the body asks.

    Raises:
        BadBody: ``stream`` or ``stream_options`` of the wrong type.
    """
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadBody("stream", "must be true or false")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"}:
        raise BadBody("stream_options", "only include_usage is supported")
    usage = options.get("include_usage", False)
    if not isinstance(usage, bool):
        raise BadBody("stream_options.include_usage", "must be true or false")
    return stream, usage


def _message(raw: Any, path: str) -> pb.Message:
    if not isinstance(raw, dict):
        raise BadBody(path, "a message is an object with a role")
    role = _ROLES.get(str(raw.get("role")))
    if role is None:
        raise BadBody(f"{path}.role", f"one of {', '.join(_ROLES)}")
    message = pb.Message(role=role)
    content = raw.get("content")
    if isinstance(content, str):
        message.content.append(pb.ContentPart(text=content))
    elif isinstance(content, list):
        message.content.extend(_part(p, f"{path}.content[{i}]") for i, p in enumerate(content))
    elif content is not None:
        raise BadBody(f"{path}.content", "a string or a list of content parts")
    calls = raw.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise BadBody(f"{path}.tool_calls", "must be a list")
        message.tool_calls.extend(
            _tool_call(c, f"{path}.tool_calls[{i}]") for i, c in enumerate(calls)
        )
    call_id = raw.get("tool_call_id")
    if call_id is not None:
        message.tool_call_id = string(call_id, f"{path}.tool_call_id")
    return message


def _part(raw: Any, path: str) -> pb.ContentPart:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return pb.ContentPart(text=string(raw.get("text"), f"{path}.text"))
    if kind == "image_url":
        image = raw.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return pb.ContentPart(image=pb.Image(url=string(url, f"{path}.image_url.url")))
    raise BadBody(f"{path}.type", "a content part is of type 'text' or 'image_url'")


def _tool_call(raw: Any, path: str) -> pb.ToolCall:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict):
        raise BadBody(f"{path}.function", "a tool call has a function with name and arguments")
    return pb.ToolCall(
        id=string(raw.get("id", ""), f"{path}.id"),
        name=string(function.get("name"), f"{path}.function.name"),
        arguments_json=string(function.get("arguments", ""), f"{path}.function.arguments"),
    )


def _tool(raw: Any, path: str) -> pb.Tool:
    if not isinstance(raw, dict) or raw.get("type", "function") != "function":
        raise BadBody(f"{path}.type", "only tools of type 'function' are supported")
    function = raw.get("function")
    if not isinstance(function, dict):
        raise BadBody(f"{path}.function", "a function tool has a 'function' object")
    tool = pb.Tool(
        name=string(function.get("name"), f"{path}.function.name"),
        description=string(function.get("description", ""), f"{path}.function.description"),
    )
    schema = function.get("parameters")
    if schema is not None:
        tool.parameters.CopyFrom(schema_struct(schema, f"{path}.function.parameters"))
    return tool


def _parameters(body: Mapping[str, Any], request: AgentCall) -> None:
    params = pb.Parameters()
    given = False
    if (temperature := number(body, "temperature")) is not None:
        params.temperature, given = temperature, True
    if (top_p := number(body, "top_p")) is not None:
        params.top_p, given = top_p, True
    limit = integer(body, "max_completion_tokens")
    if limit is None:
        limit = integer(body, "max_tokens")
    if limit is not None:
        if not 0 < limit < 2**31:
            raise BadBody("max_completion_tokens", "must be a positive integer")
        params.max_tokens, given = limit, True
    if (seed := integer(body, "seed")) is not None:
        if not -(2**63) <= seed < 2**63:
            raise BadBody("seed", "must fit in 64 bits")
        params.seed, given = seed, True
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadBody("stop", "a string or a list of strings")
        params.stop.extend(stops)
        given = True
    response_format = body.get("response_format")
    if response_format is not None:
        params.response_format.CopyFrom(_response_format(response_format))
        given = True
    if given:
        request.parameters.CopyFrom(params)


def _response_format(raw: Any) -> pb.ResponseFormat:
    kind = _FORMATS.get(str(raw.get("type"))) if isinstance(raw, dict) else None
    if kind is None:
        raise BadBody("response_format.type", f"one of {', '.join(_FORMATS)}")
    result = pb.ResponseFormat(type=kind)
    if kind == pb.ResponseFormat.TYPE_JSON_SCHEMA:
        spec = raw.get("json_schema")
        if not isinstance(spec, dict):
            raise BadBody("response_format.json_schema", "an object with name and schema")
        result.schema_name = string(spec.get("name", ""), "response_format.json_schema.name")
        result.strict = bool(spec.get("strict", False))
        if spec.get("schema") is not None:
            result.json_schema.CopyFrom(
                schema_struct(spec["schema"], "response_format.json_schema.schema")
            )
    return result


# The contract's field paths (in a BadRequest from the servicer) → OpenAI's request fields.
_PARAMS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"^agent$", "model"),
        (r"^parameters\.response_format\.json_schema\w*", "response_format.json_schema.schema"),
        (r"^parameters\.response_format\.schema_name\b", "response_format.json_schema.name"),
        (r"^parameters\.response_format\.strict\b", "response_format.json_schema.strict"),
        (r"^parameters\.", ""),
        (r"^(messages\[\d+\]\.content\[\d+\])\.image\b", r"\1.image_url"),
        (r"^(messages\[\d+\]\.tool_calls\[\d+\])\.name\b", r"\1.function.name"),
        (r"^(messages\[\d+\]\.tool_calls\[\d+\])\.arguments_json\b", r"\1.function.arguments"),
        (r"^(tools\[\d+\])\.parameters(_json)?\b", r"\1.function.parameters"),
        (r"^(tools\[\d+\])\.(name|description)\b", r"\1.function.\2"),
    )
)


def openai_param(field: str, body: Mapping[str, Any]) -> str:
    """The OpenAI request field for the contract's ``field`` (a BadRequest field path), as
    the caller wrote it: ``parameters.max_tokens`` is ``max_tokens`` or
    ``max_completion_tokens``, whichever the body has."""
    if field == "parameters.max_tokens":
        return "max_tokens" if "max_completion_tokens" not in body else "max_completion_tokens"
    for pattern, replacement in _PARAMS:
        field, found = pattern.subn(replacement, field, count=1)
        if found:
            return field
    return field


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage_json(usage: pb.Usage) -> dict[str, Any]:
    """OpenAI's usage object for the contract's Usage (cost as a Switchboard extension)."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens or usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "cost_usd": usage.cost_usd,
    }


def completion(response: pb.InvokeResponse) -> dict[str, Any]:
    """The ``chat.completion`` object for an Invoke answer."""
    text = "".join(part.text for part in response.message.content if part.HasField("text"))
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if response.message.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in response.message.tool_calls
        ]
    elif message["content"] is None:
        message["content"] = ""
    return {
        "id": completion_id(response.request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": response.agent,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS[response.finish_reason],
                "logprobs": None,
            }
        ],
        "usage": usage_json(response.usage),
        "system_fingerprint": None,
    }


class Chunks:
    """Turns one Stream's events into ``chat.completion.chunk`` objects, in OpenAI's order:
    the role first, deltas, the finish reason, then (when asked) one chunk with the usage
    and no choices."""

    def __init__(self, agent: str, include_usage: bool) -> None:
        self._agent = agent
        self._include_usage = include_usage
        self._id = completion_id("")
        self._created = int(time.time())
        self._usage: pb.Usage | None = None
        # Tool-call deltas wait for the step's end: a tool loop's steps whose calls the server
        # ran must not reach an OpenAI client (it would run them); the answering step's
        # calls for the caller come out before the finish.
        self._calls: list[dict[str, Any]] = []
        self._ran: set[str] = set()  # ids of the step's calls the server ran
        self._stepped = False  # a step ended: the next delta starts another

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._agent,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    def of(self, event: pb.StreamResponse) -> list[dict[str, Any]]:
        """The chunks ``event`` gives (none for some events)."""
        kind = event.WhichOneof("event")
        if kind == "start":
            self._id = completion_id(event.start.request_id)
            self._agent = event.start.agent or self._agent
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("text_delta", "tool_call_delta") and self._stepped:
            self._calls, self._ran, self._stepped = [], set(), False
        if kind == "text_delta":
            return [self._chunk({"content": event.text_delta.text})]
        if kind == "tool_call_delta":
            delta = event.tool_call_delta
            call: dict[str, Any] = {"index": delta.index, "function": {}}
            if delta.id:
                call["id"], call["type"] = delta.id, "function"
            if delta.name:
                call["function"]["name"] = delta.name
            call["function"]["arguments"] = delta.arguments_delta
            self._calls.append(call)
            return []
        if kind == "tool_result":
            self._ran.add(event.tool_result.tool_call_id)
            return []
        if kind == "step_finish":
            self._stepped = True
            return []
        if kind == "usage":
            self._usage = event.usage
            return []
        if kind == "finish":
            chunks = [self._chunk({"tool_calls": [c]}) for c in self._callers()]
            chunks.append(self._chunk({}, FINISH_REASONS[event.finish.finish_reason]))
            if self._include_usage and self._usage is not None:
                last = self._chunk({})
                last["choices"] = []
                last["usage"] = usage_json(self._usage)
                chunks.append(last)
            return chunks
        return []

    def _callers(self) -> list[dict[str, Any]]:
        """The last step's tool-call deltas for calls the server did not run."""
        ran: set[int] = set()
        for call in self._calls:
            if call.get("id") in self._ran:
                ran.add(call["index"])
        return [c for c in self._calls if c["index"] not in ran]
