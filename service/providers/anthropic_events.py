"""Anthropic Messages stream events as small typed structs, decoded straight from JSON bytes.

The fields the event reader (``anthropic_wire.EventReader``) reads, and nothing more: unknown
fields are skipped by the decoder. The shapes are the Messages API's streaming events
(``message_start``, ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``,
``message_stop``; API reference, "Streaming Messages"). msgspec decodes an event into these in
one C pass, instead of the SDK's pydantic model per event.

``decode`` raises ``msgspec.DecodeError`` (``msgspec.ValidationError`` is a subclass) for
bytes that are not such an event; the provider maps it as a malformed response.
"""

from __future__ import annotations

from typing import Any

import msgspec


class CacheCreation(msgspec.Struct, frozen=True):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class OutputTokensDetails(msgspec.Struct, frozen=True):
    thinking_tokens: int | None = None


class Usage(msgspec.Struct, frozen=True):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_creation: CacheCreation | None = None
    output_tokens_details: OutputTokensDetails | None = None


class Message(msgspec.Struct, frozen=True):
    usage: Usage | None = None
    id: str | None = None  # msg_…


class ContentBlock(msgspec.Struct, frozen=True):
    type: str = ""
    id: str = ""
    name: str = ""
    input: dict[str, Any] | None = None
    text: str = ""


class Delta(msgspec.Struct, frozen=True):
    """A ``content_block_delta``'s delta (``text_delta``, ``input_json_delta``, …) or a
    ``message_delta``'s (``stop_reason``)."""

    type: str = ""
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class Event(msgspec.Struct, frozen=True):
    type: str = ""
    index: int = 0
    message: Message | None = None
    content_block: ContentBlock | None = None
    delta: Delta | None = None
    usage: Usage | None = None


_DECODER = msgspec.json.Decoder(Event)


def decode(data: bytes) -> Event:
    """The event in ``data`` (one SSE event's data).

    Raises:
        msgspec.DecodeError: not JSON, or not shaped like an event.
    """
    return _DECODER.decode(data)
