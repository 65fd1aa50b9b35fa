"""The Anthropic Messages wire format: domain call → request body, stream events → events.

Plain data in and out (the SDK's event objects are read by attribute), so the mapping is
testable on its own.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

from service.domain import (
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ProviderEvent,
    Role,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from service.errors import InvalidArgument, Unavailable
from service.providers.anthropic_format import JSON_TOOL, structured_output
from service.providers.base import ModelCall
from service.usage.estimate import AnswerCounter, estimated

STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)


def build_request(
    call: ModelCall, *, model: str, target: str, default_max_tokens: int
) -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for ``call`` (without ``stream``).

    The agent's system prompt and any SYSTEM messages go to the top-level ``system`` field;
    TOOL results become ``tool_result`` blocks of a user turn; consecutive turns of one role
    are merged. ``temperature`` and ``top_p`` travel in ``extra_body`` (the SDK no longer
    names them); ``seed`` has no Anthropic equivalent and is not sent.

    A JSON response format becomes the Messages API's structured output
    (:func:`service.providers.anthropic_format.structured_output`).

    Raises:
        InvalidArgument: a JSON schema the Messages API cannot take, or an assistant tool
            call whose arguments are not a JSON object.
    """
    p = call.parameters
    system = [call.system_prompt] if call.system_prompt else []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(call.messages):
        if message.role is Role.SYSTEM:
            system.append(message.text)
            continue
        role = "assistant" if message.role is Role.ASSISTANT else "user"
        blocks = _blocks(message, f"messages[{i}]")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    request: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": p.max_tokens or default_max_tokens,
    }
    if system:
        request["system"] = "\n\n".join(system)
    if call.tools:
        request["tools"] = [
            {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "input_schema": dict(tool.parameters) or {"type": "object"},
            }
            for tool in call.tools
        ]
    request.update(structured_output(p.response_format, request.get("tools", [])))
    if p.stop:
        request["stop_sequences"] = list(p.stop)
    # The SDK dropped temperature/top_p from its signature; the API still takes them on
    # models that sample, so they go in the body as-is, and only when set.
    sampling = {"temperature": p.temperature, "top_p": p.top_p}
    if any(v is not None for v in sampling.values()):
        request["extra_body"] = {k: v for k, v in sampling.items() if v is not None}
    return request


def _blocks(message: Message, where: str) -> list[dict[str, Any]]:
    if message.role is Role.TOOL:
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}
        ]
    blocks = [_part(p) for p in message.content if not (isinstance(p, TextPart) and not p.text)]
    for j, call in enumerate(message.tool_calls):
        try:
            arguments = json.loads(call.arguments_json or "{}")
        except (ValueError, RecursionError):  # RecursionError: deep nesting
            arguments = None
        if not isinstance(arguments, dict):
            raise InvalidArgument.field(
                f"{where}.tool_calls[{j}].arguments_json", "must be a JSON object"
            )
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.data:
        data = base64.b64encode(part.data).decode()
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": part.media_type, "data": data},
        }
    inline = _DATA_URL.match(part.url)
    if inline:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": inline["type"], "data": inline["data"]},
        }
    return {"type": "image", "source": {"type": "url", "url": part.url}}


class EventReader:
    """Turns a Messages stream (message_start, content_block_start/delta/stop, message_delta,
    message_stop; the SDK drops ``ping`` and raises on ``error``) into provider events.

    Tool calls are numbered in the order their ``tool_use`` blocks start, whatever the block
    indices of the text around them. The input of the ``json_object`` tool
    (:data:`service.providers.anthropic_format.JSON_TOOL`) is the answer's text instead.
    After the stream ends :meth:`finish` yields the usage and the one ``Finish`` — or raises
    ``Unavailable`` when ``message_stop`` never came. The usage is the last one reported
    (``message_start``, updated by ``message_delta``); a compatible server that reports none
    gets an estimate from ``call`` and the delivered answer. ``message_start``'s usage is
    also yielded as a partial ``UsageEvent`` right after the first piece of the answer, so a
    call cut short is charged the input the upstream reported.
    """

    def __init__(self, target: str, call: ModelCall) -> None:
        self._target = target
        self._call = call
        self._answer = AnswerCounter()
        self._tool_of_block: dict[int, int] = {}
        self._tool_has_arguments: dict[int, bool] = {}
        self._json_blocks: dict[int, bool] = {}  # the json_object tool's blocks: has input
        self._usage: Usage | None = None
        self._told = False  # the partial usage was yielded
        self._stop_reason: str | None = None
        self._stopped = False
        self._id = ""

    def feed(self, event: Any) -> Iterator[ProviderEvent]:
        for out in self._events(event):
            self._answer.add(out)
            yield out
            if self._usage is not None and not self._told:
                # What message_start reported, once the answer began: a call cut short from
                # here is charged it rather than an estimate of its prompt.
                self._told = True
                yield UsageEvent(self._usage, partial=True)

    def _events(self, event: Any) -> Iterator[TextDelta | ToolCallDelta]:
        match event.type:
            case "message_start":
                self._id = str(getattr(event.message, "id", None) or "")
                usage = getattr(event.message, "usage", None)
                if usage is not None:
                    self._usage = usage_of(usage)
            case "content_block_start":
                block = event.content_block
                if block.type == "tool_use" and block.name == JSON_TOOL:
                    self._json_blocks[event.index] = bool(block.input)
                    if block.input:
                        yield TextDelta(json.dumps(block.input))
                elif block.type == "tool_use":
                    tool = len(self._tool_of_block)
                    self._tool_of_block[event.index] = tool
                    yield ToolCallDelta(index=tool, id=block.id, name=block.name)
                    if block.input:
                        self._tool_has_arguments[tool] = True
                        yield ToolCallDelta(index=tool, arguments_delta=json.dumps(block.input))
                elif block.type == "text" and block.text:
                    yield TextDelta(block.text)
            case "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    yield TextDelta(delta.text)
                elif delta.type == "input_json_delta" and event.index in self._json_blocks:
                    if delta.partial_json:
                        self._json_blocks[event.index] = True
                        yield TextDelta(delta.partial_json)
                elif delta.type == "input_json_delta" and delta.partial_json:
                    owner = self._tool_of_block.get(event.index)
                    if owner is not None:
                        self._tool_has_arguments[owner] = True
                        yield ToolCallDelta(index=owner, arguments_delta=delta.partial_json)
            case "content_block_stop":
                if self._json_blocks.get(event.index) is False:
                    self._json_blocks[event.index] = True
                    yield TextDelta("{}")
                closed = self._tool_of_block.get(event.index)
                if closed is not None and not self._tool_has_arguments.get(closed):
                    # A tool without arguments: the same "{}" an OpenAI target would give.
                    self._tool_has_arguments[closed] = True
                    yield ToolCallDelta(index=closed, arguments_delta="{}")
            case "message_delta":
                self._stop_reason = event.delta.stop_reason or self._stop_reason
                usage = getattr(event, "usage", None)
                if usage is not None:
                    self._usage = usage_of(usage, self._usage)
            case "message_stop":
                self._stopped = True

    def finish(self) -> Iterator[ProviderEvent]:
        """The closing events.

        Raises:
            Unavailable: the stream ended before ``message_stop``.
        """
        if not self._stopped:
            raise Unavailable(
                f"target {self._target!r}: the upstream stream ended before it finished "
                "(no message_stop); the answer is incomplete"
            )
        yield UsageEvent(self._usage or estimated(self._call, self._answer))
        reason = STOP_REASONS.get(self._stop_reason or "", FinishReason.UNSPECIFIED)
        if reason is FinishReason.TOOL_CALLS and self._json_blocks and not self._tool_of_block:
            reason = FinishReason.STOP  # only the json_object tool was called: an answer
        yield Finish(reason, response_id=self._id)


def usage_of(usage: Any, before: Usage | None = None) -> Usage:
    """The domain usage of a Messages ``usage`` object, each count taken from ``before`` (the
    usage reported earlier in the stream) where this one leaves it out.

    Anthropic's ``input_tokens`` excludes the cache: Switchboard's input is
    ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``. Cache writes are
    split by TTL from ``cache_creation.ephemeral_5m/1h_input_tokens``; writes the breakdown does
    not account for (or a total without one) count as 5-minute writes, the API's default TTL.
    Reasoning is ``output_tokens_details.thinking_tokens``, part of ``output_tokens``.
    """
    was = before or Usage()
    uncached = _count(
        usage,
        "input_tokens",
        was.input_tokens - was.cached_input_tokens - was.cache_creation_input_tokens,
    )
    read = _count(usage, "cache_read_input_tokens", was.cached_input_tokens)
    written = _count(usage, "cache_creation_input_tokens", was.cache_creation_input_tokens)
    split = getattr(usage, "cache_creation", None)
    one_hour = _count(split, "ephemeral_1h_input_tokens", was.cache_creation_1h_input_tokens)
    written = max(written, one_hour + _count(split, "ephemeral_5m_input_tokens", 0))
    output = _count(usage, "output_tokens", was.output_tokens)
    details = getattr(usage, "output_tokens_details", None)
    return Usage(
        input_tokens=uncached + read + written,
        output_tokens=output,
        cached_input_tokens=read,
        cache_creation_5m_input_tokens=written - one_hour,
        cache_creation_1h_input_tokens=one_hour,
        reasoning_tokens=min(_count(details, "thinking_tokens", was.reasoning_tokens), output),
    )


def _count(holder: Any, name: str, default: int) -> int:
    value = getattr(holder, name, None) if holder is not None else None
    return value if isinstance(value, int) and value >= 0 else default
