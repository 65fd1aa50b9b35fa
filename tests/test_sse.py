"""The SSE decoder (service/providers/sse.py) against the WHATWG event-stream rules, fed the
way a network delivers bytes: split anywhere."""

from __future__ import annotations

import pytest

from service.providers.sse import ServerEvent, SSEDecoder

STREAM = (
    b": a comment line\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"data:no-space\r\n"
    b"id: 7\r\n"
    b"retry: 10\r\n"
    b"\r\n"
    b"data: first line\r"
    b"data: second line\r"
    b"\r"
    b"event: ping\n"
    b"\n"  # an event without data is not dispatched
    b"data\n"  # the field name alone: empty data
    b"\n"
    b"data: [DONE]\n"
    b"\n"
    b"data: cut off by the end of the stream"
)
EXPECTED = [
    ServerEvent("message_start", b'{"a": 1}'),
    ServerEvent("", b"no-space"),
    ServerEvent("", b"first line\nsecond line"),
    ServerEvent("", b""),
    ServerEvent("", b"[DONE]"),
]


def decode(pieces: list[bytes]) -> list[ServerEvent]:
    decoder = SSEDecoder()
    return [event for piece in pieces for event in decoder.feed(piece)]


def test_one_read_gives_every_whole_event_at_once() -> None:
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16])
def test_any_split_of_the_bytes_gives_the_same_events(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(pieces) == EXPECTED


def test_a_crlf_split_between_reads_is_one_line_end() -> None:
    assert decode([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [
        ServerEvent("", b"a"),
        ServerEvent("", b"b"),
    ]


def test_an_event_is_returned_only_once_its_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x":') == []
    assert decoder.feed(b"1}\n") == []
    assert decoder.feed(b"\n") == [ServerEvent("", b'{"x":1}')]
