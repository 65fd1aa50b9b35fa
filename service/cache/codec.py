"""A cached answer ⇄ bytes: its target and the events between Start and Finish."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from service.domain import (
    FinishReason,
    TargetRef,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageEvent,
)

Body = TextDelta | ToolCallDelta | UsageEvent


@dataclass(frozen=True, slots=True)
class Entry:
    target: TargetRef
    events: tuple[Body, ...]
    reason: FinishReason


def _event(event: Body) -> list[object]:
    match event:
        case TextDelta(text=text):
            return ["t", text]
        case ToolCallDelta():
            return ["c", event.index, event.id, event.name, event.arguments_delta]
        case UsageEvent(usage=u):
            return ["u", u.input_tokens, u.output_tokens, u.cached_input_tokens]


def encode(target: TargetRef, events: Sequence[Body], reason: FinishReason) -> bytes:
    return json.dumps(
        {
            "target": [target.name, target.provider, target.model],
            "events": [_event(e) for e in events],
            "reason": reason.value,
        },
        ensure_ascii=False,
    ).encode()


def decode(data: bytes) -> Entry:
    """Raises ValueError/KeyError on bytes that ``encode`` did not make."""
    raw = json.loads(data)
    events: list[Body] = []
    for item in raw["events"]:
        kind = item[0]
        if kind == "t":
            events.append(TextDelta(item[1]))
        elif kind == "c":
            events.append(ToolCallDelta(*item[1:]))
        elif kind == "u":
            events.append(UsageEvent(Usage(*item[1:])))  # cost 0: a cache hit costs nothing
        else:
            raise ValueError(f"unknown cached event {kind!r}")
    return Entry(TargetRef(*raw["target"]), tuple(events), FinishReason(raw["reason"]))
