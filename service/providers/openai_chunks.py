"""Chat Completions stream chunks as small typed structs, decoded straight from JSON bytes.

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


_DECODER = msgspec.json.Decoder(Chunk)


def decode(data: bytes) -> Chunk:
    """The chunk in ``data`` (one SSE event's data).

    Raises:
        msgspec.DecodeError: not JSON, or not shaped like a chunk.
    """
    return _DECODER.decode(data)
