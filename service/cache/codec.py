"""A cached answer ⇄ bytes: its target, the events between Start and Finish, and the
Finish's reason and guard verdicts (the output guards' verdicts on the answer as made: a
replay carries them, as the answer it replays was judged by them)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from service.domain import (
    FinishReason,
    GuardVerdict,
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
    verdicts: tuple[GuardVerdict, ...] = ()


def _event(event: Body) -> list[object]:
    match event:
        case TextDelta(text=text):
            return ["t", text]
        case ToolCallDelta():
            return ["c", event.index, event.id, event.name, event.arguments_delta]
        case UsageEvent(usage=u):
            return [
                "u",
                u.input_tokens,
                u.output_tokens,
                u.cached_input_tokens,
                u.cache_creation_5m_input_tokens,
                u.cache_creation_1h_input_tokens,
                u.reasoning_tokens,
                u.estimated,
            ]


def encode(
    target: TargetRef,
    events: Sequence[Body],
    reason: FinishReason,
    verdicts: Sequence[GuardVerdict] = (),
) -> bytes:
    return json.dumps(
        {
            "target": [target.name, target.provider, target.model],
            "events": [_event(e) for e in events],
            "reason": reason.value,
            "verdicts": [[v.guard, v.stage, v.category, v.action, v.count] for v in verdicts],
        },
        ensure_ascii=False,
    ).encode()


def decode(data: bytes) -> Entry:
    """Raises ValueError/KeyError/TypeError on bytes that ``encode`` did not make."""
    raw = json.loads(data)
    events: list[Body] = []
    for item in raw["events"]:
        kind = item[0]
        if kind == "t":
            events.append(TextDelta(item[1]))
        elif kind == "c":
            events.append(ToolCallDelta(*item[1:]))
        elif kind == "u":
            events.append(UsageEvent(_usage(item[1:])))
        else:
            raise ValueError(f"unknown cached event {kind!r}")
    verdicts = tuple(_verdict(v) for v in raw.get("verdicts", ()))  # none in older entries
    return Entry(TargetRef(*raw["target"]), tuple(events), FinishReason(raw["reason"]), verdicts)


def _verdict(fields: list[object]) -> GuardVerdict:
    guard, stage, category, action, count = fields
    if not all(isinstance(f, str) for f in (guard, stage, category, action)):
        raise TypeError(f"a cached guard verdict is not four names and a count: {fields!r}")
    return GuardVerdict(str(guard), str(stage), str(category), str(action), _count(count))


def _usage(fields: list[object]) -> Usage:
    """The usage of a cached answer, at cost 0 (a cache hit costs nothing). Entries written
    before the cache-write, reasoning and estimated dimensions existed hold only the first
    three counts."""
    counts = [_count(v) for v in fields[:6]]
    counts += [0] * (6 - len(counts))
    return Usage(
        input_tokens=counts[0],
        output_tokens=counts[1],
        cached_input_tokens=counts[2],
        cache_creation_5m_input_tokens=counts[3],
        cache_creation_1h_input_tokens=counts[4],
        reasoning_tokens=counts[5],
        estimated=len(fields) > 6 and fields[6] is True,
    )


def _count(value: object) -> int:
    if not isinstance(value, int):
        raise TypeError(f"a cached usage count is not an integer: {value!r}")
    return value
