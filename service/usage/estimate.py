"""Token counts estimated when an upstream reports none.

An OpenAI-compatible server may ignore ``stream_options.include_usage`` and end a whole
answer (finish reason, then ``data: [DONE]``) without a usage chunk; a stream cut short never
reports usage at all. The call still reached the upstream and must be charged, so its usage is
estimated from what Switchboard saw: the prompt it sent and the answer it delivered, marked
``Usage.estimated``.

The rule is one token per ``BYTES_PER_TOKEN`` UTF-8 bytes, plus a small overhead per message
and per tool call. English text averages about four characters a token (OpenAI's tokenizer
guidance), so the rule counts it a third high; scripts of three-byte characters (CJK) come out
at about one token a character, where real tokenizers also land. It is cheap (one encode, no
tokenizer) and errs high for prose; text denser than three bytes a token (one-letter words,
digits) is counted low: an estimate, not a bound (reservations use
:mod:`service.usage.bound`). Where the upstream reported usage, even part of it, that is
charged instead.
Nothing here does I/O; it is plain arithmetic on domain values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from service.domain import Event, Message, TextDelta, TextPart, Tool, ToolCallDelta, Usage

if TYPE_CHECKING:
    from service.providers.base import ModelCall

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
"""Role markers and separators that chat templates add around each message."""
TOOL_CALL_OVERHEAD_TOKENS = 4
"""The call's id, type and framing around its name and arguments."""
IMAGE_TOKENS = 1_000
"""An image part: roughly a 1024x1024 image at high detail on current models."""


def text_tokens(text: str) -> int:
    """The estimated tokens of ``text`` (0 for empty text)."""
    if not text:
        return 0
    return -(-len(text.encode("utf-8", "surrogatepass")) // BYTES_PER_TOKEN)


def prompt_tokens(
    system_prompt: str, messages: Sequence[Message], tools: Sequence[Tool] = ()
) -> int:
    """The estimated input tokens of a prompt: the system prompt, every message (text, image
    parts, tool calls, tool results) and the tool definitions offered to the model."""
    total = 0
    if system_prompt:
        total += MESSAGE_OVERHEAD_TOKENS + text_tokens(system_prompt)
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS
        for part in message.content:
            total += text_tokens(part.text) if isinstance(part, TextPart) else IMAGE_TOKENS
        for call in message.tool_calls:
            total += TOOL_CALL_OVERHEAD_TOKENS + text_tokens(call.name)
            total += text_tokens(call.arguments_json)
        total += text_tokens(message.tool_call_id)
    for tool in tools:
        schema = json.dumps(dict(tool.parameters), separators=(",", ":"), default=str)
        total += TOOL_CALL_OVERHEAD_TOKENS + text_tokens(tool.name)
        total += text_tokens(tool.description) + text_tokens(schema)
    return total


class AnswerCounter:
    """Counts the estimated output tokens of an answer as its events go by.

    Feed it every event (others than text and tool-call deltas are ignored); ``tokens`` is the
    estimate so far: the text, and each tool call's name and arguments. Feeding only keeps a
    reference to each piece (the answer holds them anyway); they are measured when ``tokens``
    is read, which a reader does only when the upstream reported no usage.
    """

    __slots__ = ("_calls", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[str] = []
        # The tool calls' indices, made at the first one: most answers have none, and an
        # empty set is 216 bytes held for as long as the answer streams.
        self._calls: set[int] | None = None

    def add(self, event: Event) -> None:
        if type(event) is TextDelta:
            self._pieces.append(event.text)
        elif type(event) is ToolCallDelta:
            if self._calls is None:
                self._calls = set()
            self._calls.add(event.index)
            self._pieces.append(event.name)
            self._pieces.append(event.arguments_delta)

    @property
    def tokens(self) -> int:
        size = sum(len(p.encode("utf-8", "surrogatepass")) for p in self._pieces)
        calls = len(self._calls) if self._calls is not None else 0
        return -(-size // BYTES_PER_TOKEN) + TOOL_CALL_OVERHEAD_TOKENS * calls


def answer_tokens(events: Iterable[Event]) -> int:
    """The estimated output tokens of an answer's events (see :class:`AnswerCounter`)."""
    counter = AnswerCounter()
    for event in events:
        counter.add(event)
    return counter.tokens


def estimated_usage(input_tokens: int, output_tokens: int) -> Usage:
    """A ``Usage`` of estimated counts, marked ``estimated`` (priced like a reported one)."""
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=True)


def cut_short(
    partial: Usage | None, prompt: tuple[str, Sequence[Message], Sequence[Tool]], delivered: int
) -> Usage:
    """What an answer cut short before its usage report is charged, marked ``estimated``:
    the input the upstream reported mid-answer (``partial``), else the estimate of ``prompt``
    (system prompt, messages, tools); and the output delivered (``delivered`` tokens), or the
    partial report's output if that is more."""
    if partial is not None:
        output = max(partial.output_tokens, delivered)
        return dataclasses.replace(partial, output_tokens=output, estimated=True)
    return estimated_usage(prompt_tokens(*prompt), delivered)


def estimated(call: ModelCall, answer: AnswerCounter) -> Usage:
    """The estimated usage of one upstream call: ``call``'s prompt in, ``answer`` out."""
    return estimated_usage(
        prompt_tokens(call.system_prompt, call.messages, call.tools), answer.tokens
    )
