"""The Chat Completions wire format: domain call → request body, stream chunks → events.

Plain data in and out (the SDK's chunk objects are read by attribute), so the mapping is
testable on its own. Used by the ``openai`` and ``openai_compatible`` providers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from service.domain import (
    Finish,
    FinishReason,
    ImagePart,
    Message,
    ProviderEvent,
    ResponseFormatType,
    Role,
    TextDelta,
    TextPart,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from service.errors import Unavailable
from service.providers.base import ModelCall
from service.usage.estimate import AnswerCounter, estimated

FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def build_request(
    call: ModelCall, *, model: str, max_tokens_field: str, include_usage: bool
) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for ``call`` (without ``stream``).

    ``max_tokens_field`` is ``max_completion_tokens`` for OpenAI itself (its current name)
    and ``max_tokens`` for compatible servers, which may know only the older name.
    """
    messages: list[dict[str, Any]] = []
    if call.system_prompt:
        messages.append({"role": "system", "content": call.system_prompt})
    messages += [_message(m) for m in call.messages]
    request: dict[str, Any] = {"model": model, "messages": messages}
    if include_usage:
        request["stream_options"] = {"include_usage": True}
    if call.tools:
        request["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description else {}),
                    "parameters": dict(tool.parameters) or {"type": "object"},
                },
            }
            for tool in call.tools
        ]
    p = call.parameters
    optional = {
        "temperature": p.temperature,
        "top_p": p.top_p,
        max_tokens_field: p.max_tokens,
        "seed": p.seed,
        "stop": list(p.stop) or None,
    }
    request.update({k: v for k, v in optional.items() if v is not None})
    fmt = p.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_OBJECT:
        request["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA:
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.schema_name,
                "schema": dict(fmt.json_schema or {}),
                "strict": fmt.strict,
            },
        }
    return request


def _message(message: Message) -> dict[str, Any]:
    match message.role:
        case Role.SYSTEM:
            return {"role": "system", "content": message.text}
        case Role.TOOL:
            return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
        case Role.ASSISTANT:
            out: dict[str, Any] = {"role": "assistant", "content": message.text or None}
            if message.tool_calls:
                out["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments_json or "{}"},
                    }
                    for c in message.tool_calls
                ]
            return out
        case Role.USER:
            if all(isinstance(p, TextPart) for p in message.content):
                return {"role": "user", "content": message.text}
            return {"role": "user", "content": [_part(p) for p in message.content]}


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    url = part.url
    if part.data:
        url = f"data:{part.media_type};base64,{base64.b64encode(part.data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


class ChunkReader:
    """Turns a Chat Completions chunk stream into provider events.

    Feed every chunk to :meth:`feed`, call :meth:`done` when ``data: [DONE]`` arrives, and
    after the stream ends call :meth:`finish`, which yields the usage and the one ``Finish``.
    A stream is whole when the protocol says so: a chunk with a ``finish_reason``, then
    ``[DONE]``. The usage chunk is optional (servers that ignore
    ``stream_options.include_usage`` send none): without it the usage is estimated from
    ``call``'s prompt and the delivered answer, and marked ``estimated``.
    """

    def __init__(self, target: str, call: ModelCall) -> None:
        self._target = target
        self._call = call
        self._answer = AnswerCounter()
        self._finish: str | None = None
        self._done = False
        self._usage: Usage | None = None
        self._refused = False
        self._id = ""

    def feed(self, chunk: Any) -> Iterator[ProviderEvent]:
        self._id = self._id or str(getattr(chunk, "id", None) or "")
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self._usage = usage_of(usage)
        for choice in getattr(chunk, "choices", None) or ():
            if choice.index != 0:
                continue  # Switchboard asks for one choice (n is never set)
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    yield self._counted(TextDelta(delta.content))
                if getattr(delta, "refusal", None):
                    self._refused = True
                    yield self._counted(TextDelta(delta.refusal))
                for call in delta.tool_calls or ():
                    function = call.function
                    event = ToolCallDelta(
                        index=call.index,
                        id=call.id or "",
                        name=(function.name if function is not None else None) or "",
                        arguments_delta=(function.arguments if function is not None else None)
                        or "",
                    )
                    if event.id or event.name or event.arguments_delta:
                        yield self._counted(event)
            if choice.finish_reason:
                self._finish = choice.finish_reason

    def _counted(self, event: TextDelta | ToolCallDelta) -> TextDelta | ToolCallDelta:
        self._answer.add(event)
        return event

    def done(self) -> None:
        """``data: [DONE]`` arrived: the upstream says the stream is complete."""
        self._done = True

    def finish(self) -> Iterator[ProviderEvent]:
        """The closing events.

        Raises:
            Unavailable: the stream ended before its finish reason, or before ``[DONE]`` (a
                body cut short after the last chunk is as truncated as one cut earlier).
        """
        if self._finish is None or not self._done:
            missing = "finish reason" if self._finish is None else "[DONE]"
            raise Unavailable(
                f"target {self._target!r}: the upstream stream ended before it finished "
                f"(no {missing}); the answer is incomplete"
            )
        yield UsageEvent(self._usage or estimated(self._call, self._answer))
        reason = FINISH_REASONS.get(self._finish, FinishReason.UNSPECIFIED)
        if self._refused and reason is FinishReason.STOP:
            reason = FinishReason.CONTENT_FILTER
        yield Finish(reason, response_id=self._id)


def usage_of(usage: Any) -> Usage:
    """The domain usage of a Chat Completions ``usage`` object: prompt tokens (cached reads
    among them, ``prompt_tokens_details.cached_tokens``), completion tokens (reasoning among
    them, ``completion_tokens_details.reasoning_tokens``)."""
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=getattr(prompt, "cached_tokens", None) or 0,
        reasoning_tokens=getattr(completion, "reasoning_tokens", None) or 0,
    )
