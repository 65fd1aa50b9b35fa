"""Keeping an error's trailers within what a client accepts.

A status travels in trailers: ``grpc-message`` (percent-encoded, so a non-ASCII byte takes 3)
and ``grpc-status-details-bin`` (base64 of a ``google.rpc.Status`` that repeats the message).
grpc clients refuse trailers over 8 KiB by default (``grpc.max_metadata_size``), and the
caller then sees RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" instead of
the real status. So the message is cut to :data:`MESSAGE_BYTES` and ``BadRequest`` keeps at
most :data:`MAX_VIOLATIONS` violations within :data:`DETAILS_BYTES`, the last saying how
many were left out: the worst case stays near 5 KiB, under the limit with room for the
other headers and details.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.rpc import error_details_pb2

from service.echo import ELLIPSIS
from service.errors import FieldViolation

MESSAGE_BYTES = 400
MAX_VIOLATIONS = 20
FIELD_BYTES = 120
DESCRIPTION_BYTES = 240
DETAILS_BYTES = 3000  # serialized BadRequest; base64 makes it 4/3 larger on the wire

Violation = error_details_pb2.BadRequest.FieldViolation


def cut_bytes(text: str, limit: int) -> str:
    """``text`` within ``limit`` UTF-8 bytes (never splitting a character), "…" when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    keep = limit - len(ELLIPSIS.encode())
    return raw[:keep].decode(errors="ignore") + ELLIPSIS


def bounded_message(message: str) -> str:
    return cut_bytes(message, MESSAGE_BYTES)


def bad_request(violations: Sequence[FieldViolation]) -> error_details_pb2.BadRequest:
    """The violations as ``google.rpc.BadRequest``, each field and description cut, the list
    cut to fit (:data:`MAX_VIOLATIONS`, :data:`DETAILS_BYTES`) with a last violation on field
    ``""`` saying how many were left out."""
    out = error_details_pb2.BadRequest()
    size = 0
    for i, v in enumerate(violations):
        entry = Violation(
            field=cut_bytes(v.field, FIELD_BYTES),
            description=cut_bytes(v.description, DESCRIPTION_BYTES),
        )
        entry_size = entry.ByteSize() + 3  # tag and length prefix
        if i == MAX_VIOLATIONS or size + entry_size > DETAILS_BYTES:
            left = len(violations) - i
            out.field_violations.append(
                Violation(
                    field="",
                    description=f"{left} more violation{'s' if left > 1 else ''} left out",
                )
            )
            break
        out.field_violations.append(entry)
        size += entry_size
    return out
