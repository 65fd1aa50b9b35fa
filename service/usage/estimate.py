"""Token counts estimated when an upstream reports none (a stand-in with the API of the
``usage`` branch's module, which replaces it on merge): one token per three UTF-8 bytes plus
a small overhead per message and tool call."""

from __future__ import annotations

from collections.abc import Sequence

from service.domain import Event, Message, TextDelta, TextPart, Tool, ToolCallDelta, Usage

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
TOOL_CALL_OVERHEAD_TOKENS = 4
IMAGE_TOKENS = 1_000


def text_tokens(text: str) -> int:
    if not text:
        return 0
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)


def prompt_tokens(
    system_prompt: str, messages: Sequence[Message], tools: Sequence[Tool] = ()
) -> int:
    total = MESSAGE_OVERHEAD_TOKENS + text_tokens(system_prompt) if system_prompt else 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        for part in message.content:
            total += text_tokens(part.text) if isinstance(part, TextPart) else IMAGE_TOKENS
        for call in message.tool_calls:
            total += TOOL_CALL_OVERHEAD_TOKENS + text_tokens(call.name + call.arguments_json)
    for tool in tools:
        total += TOOL_CALL_OVERHEAD_TOKENS + text_tokens(tool.name + tool.description)
    return total


class AnswerCounter:
    __slots__ = ("_bytes", "_calls")

    def __init__(self) -> None:
        self._bytes = 0
        self._calls: set[int] = set()

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._bytes += len(event.text.encode("utf-8", "surrogatepass"))
        elif isinstance(event, ToolCallDelta):
            self._calls.add(event.index)
            self._bytes += len((event.name + event.arguments_delta).encode("utf-8"))

    @property
    def tokens(self) -> int:
        return -(-self._bytes // BYTES_PER_TOKEN) + TOOL_CALL_OVERHEAD_TOKENS * len(self._calls)


def estimated_usage(input_tokens: int, output_tokens: int) -> Usage:
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)
