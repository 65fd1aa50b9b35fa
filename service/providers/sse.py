"""Server-sent events from a streamed HTTP body: bytes in, whole events out.

The wire format is the WHATWG HTML standard's ("Server-sent events", § 9.2.6 "Interpreting an
event stream"): lines end in LF, CRLF or CR; a blank line ends an event; ``data:`` lines are
joined with LF; ``event:`` names the event; one space after the colon is dropped; lines
starting with ``:`` are comments; other fields (``id``, ``retry``) are ignored here; an event
without data is not dispatched, and an event cut off by the end of the stream is discarded.
Both providers' streams (OpenAI's chat completion chunks, Anthropic's message events) are
this format.

Plain bytes, no SDK: the providers read the HTTP body through the SDK's client and hand the
bytes here, one network read at a time, so every event already received is returned at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One dispatched event: its ``event`` name (``""`` when the stream named none) and
    its data (the ``data:`` lines joined with LF)."""

    event: str
    data: bytes


class SSEDecoder:
    """Splits an event stream into :class:`ServerEvent`; feed it the body's reads in order."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        """The events that ``chunk`` completes, in order (none while an event is partial)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF: keep it for next time.
            held = buffer.endswith(b"\r")
            body = buffer[:-1] if held else buffer
            buffer = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        events: list[ServerEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events


def _parse(block: bytes) -> ServerEvent | None:
    name = ""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            value = line[6:]
            name = (value[1:] if value.startswith(b" ") else value).decode("utf-8", "replace")
        elif line == b"data":  # a field name alone: empty data
            data.append(b"")
    if not data:
        return None
    return ServerEvent(name, data[0] if len(data) == 1 else b"\n".join(data))
