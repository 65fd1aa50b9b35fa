"""Chat Completions stream chunks (and non-streamed completions) as small typed structs,
decoded straight from JSON bytes.

The fields the chunk reader (``openai_wire.ChunkReader``) reads, and nothing more: unknown
fields are skipped by the decoder. The shapes are OpenAI's ``chat.completion.chunk`` object
(API reference, "The chat completion chunk object"). msgspec decodes a chunk into these in
one C pass; the SDK's stream built a pydantic model per chunk by reflection, most of the
provider path's CPU.

``decode`` raises ``msgspec.DecodeError`` (``msgspec.ValidationError`` is a subclass) for
bytes that are not such a chunk; the provider maps it as a malformed response.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FunctionDelta(msgspec.Struct, frozen=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallChunk(msgspec.Struct, frozen=True):
    index: int = 0
    id: str | None = None
    function: FunctionDelta | None = None


class Delta(msgspec.Struct, frozen=True):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallChunk] | None = None


class Choice(msgspec.Struct, frozen=True):
    index: int = 0
    delta: Delta | None = None
    finish_reason: str | None = None


class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int | None = None


class CompletionUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class Chunk(msgspec.Struct, frozen=True):
    """One ``chat.completion.chunk``; ``error`` is set instead when the upstream sent an
    error object in the middle of the stream (``{"error": {...}}``)."""

    choices: list[Choice] | None = None
    usage: CompletionUsage | None = None
    error: dict[str, Any] | None = None
    id: str | None = None  # the completion's id, the same in every chunk


class ToolCall(msgspec.Struct, frozen=True):
    id: str | None = None
    function: FunctionDelta | None = None


class Message(msgspec.Struct, frozen=True):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class CompletionChoice(msgspec.Struct, frozen=True):
    index: int = 0
    message: Message | None = None
    finish_reason: str | None = None


class Completion(msgspec.Struct, frozen=True):
    """A non-streamed ``chat.completion`` (API reference, "The chat completion object")."""

    choices: list[CompletionChoice] | None = None
    usage: CompletionUsage | None = None
    id: str | None = None

    def as_chunk(self) -> Chunk:
        """The same answer as one chunk carrying it all, for the stream's chunk reader."""
        choices = [
            Choice(
                index=c.index,
                delta=None
                if c.message is None
                else Delta(
                    content=c.message.content,
                    refusal=c.message.refusal,
                    tool_calls=[
                        ToolCallChunk(index=i, id=t.id, function=t.function)
                        for i, t in enumerate(c.message.tool_calls or ())
                    ],
                ),
                finish_reason=c.finish_reason,
            )
            for c in self.choices or ()
        ]
        return Chunk(choices=choices, usage=self.usage, id=self.id)


_DECODER = msgspec.json.Decoder(Chunk)
_COMPLETION = msgspec.json.Decoder(Completion)


def decode(data: bytes) -> Chunk:
    """The chunk in ``data`` (one SSE event's data).

    Raises:
        msgspec.DecodeError: not JSON, or not shaped like a chunk.
    """
    return _DECODER.decode(data)


def decode_completion(data: bytes) -> Completion:
    """The non-streamed completion in ``data`` (a response body).

    Raises:
        msgspec.DecodeError: not JSON, or not shaped like a completion.
    """
    return _COMPLETION.decode(data)
