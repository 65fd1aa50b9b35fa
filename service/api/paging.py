"""Page sizes and opaque page tokens for List RPCs."""

from __future__ import annotations

import base64
import binascii

from service.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """Raises InvalidArgument for a negative size."""
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


# Marks a token as ours, so a stray base64 string is refused rather than read as a position.
_PREFIX = "after:"


def encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{after}".encode()).decode()


def decode_token(token: str, rpc: str) -> str:
    """The position a token resumes after ("" for none).

    Raises:
        InvalidArgument: a token no ``rpc`` response gave.
    """
    if not token:
        return ""
    try:
        decoded = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    if not decoded.startswith(_PREFIX):
        raise InvalidArgument.field("page_token", f"not a token from a previous {rpc} response")
    return decoded.removeprefix(_PREFIX)
