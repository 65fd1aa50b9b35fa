"""Quoting a caller's value in an error message, bounded.

An error that echoes what the caller sent goes back in the status trailers, which the
client's default metadata limit (8 KiB for grpc) caps: an unbounded echo turns NOT_FOUND or
INVALID_ARGUMENT into RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" at the
caller. Every echo of caller input goes through :func:`echo`.
"""

from __future__ import annotations

ECHO_CHARS = 64
ELLIPSIS = "…"


def cut(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with "…" when something was cut."""
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def echo(value: str, limit: int = ECHO_CHARS) -> str:
    """``value`` quoted for a message (``repr``, so control characters show as escapes),
    its first ``limit`` characters only, then "…" (and the full length) when longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}{ELLIPSIS} ({len(value)} characters)"
