"""Messages ⇄ JSON text, for storing turns. Inline image bytes are base64."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from service.domain import ContentPart, ImagePart, Message, Role, TextPart, ToolCall


def _part(part: ContentPart) -> dict[str, str]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    out = {"media_type": part.media_type}
    if part.data:
        out["data"] = base64.b64encode(part.data).decode()
    else:
        out["url"] = part.url
    return out


def message_dict(message: Message) -> dict[str, Any]:
    """A plain, JSON-ready form of ``message`` (also used for cache keys)."""
    out: dict[str, Any] = {
        "role": message.role.value,
        "content": [_part(p) for p in message.content],
    }
    if message.tool_calls:
        out["tool_calls"] = [[c.id, c.name, c.arguments_json] for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def encode(messages: Sequence[Message]) -> str:
    return json.dumps([message_dict(m) for m in messages], ensure_ascii=False)


def _unpart(raw: dict[str, str]) -> ContentPart:
    if "text" in raw:
        return TextPart(raw["text"])
    return ImagePart(
        url=raw.get("url", ""),
        data=base64.b64decode(raw["data"]) if "data" in raw else b"",
        media_type=raw.get("media_type", ""),
    )


def decode(text: str) -> tuple[Message, ...]:
    """The messages of ``encode``'s output. Raises ValueError (or KeyError) if it is not."""
    return tuple(
        Message(
            role=Role(raw["role"]),
            content=tuple(_unpart(p) for p in raw["content"]),
            tool_calls=tuple(ToolCall(*c) for c in raw.get("tool_calls", ())),
            tool_call_id=raw.get("tool_call_id", ""),
        )
        for raw in json.loads(text)
    )


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A rough count (4 characters a token, plus a little per message), for windows and
    budget estimates; never sent anywhere."""
    return tokens_for(count_chars(messages), len(messages))


def count_chars(messages: Sequence[Message]) -> int:
    """The characters ``estimate_tokens`` counts."""
    return sum(
        len(m.text) + sum(len(c.arguments_json) + len(c.name) for c in m.tool_calls)
        for m in messages
    )


def tokens_for(chars: int, messages: int) -> int:
    """``estimate_tokens`` from its parts (so a window can be trimmed by subtraction)."""
    return chars // 4 + 4 * messages + 1
