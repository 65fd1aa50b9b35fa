"""``google.protobuf.Struct`` and ``Timestamp`` as they enter: checked and converted once;
and :func:`timestamp` / :func:`duration`, the one way seconds leave as Timestamp and Duration.

A Struct holds every number as a double, and admits NaN and ±Infinity, which JSON does not
(RFC 8259 §6). :func:`struct_to_dict` is THE conversion of a caller's Struct to Python: an
integral number becomes an ``int`` (a schema's ``maxLength: 500`` goes upstream as ``500``,
not ``500.0``), and a NaN or infinity is a violation naming where it is. A Timestamp is valid
only within the range its definition gives (google/protobuf/timestamp.proto: 0001-01-01 to
9999-12-31, nanos in [0, 1e9)); :func:`timestamp_seconds` checks it before converting.
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from service.errors import FieldViolation

# Beyond 2**53 a double no longer holds every integer: such a number stays a float.
_EXACT = 2**53
MIN_TIMESTAMP_S = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_S = 253_402_300_799  # 9999-12-31T23:59:59Z


def struct_to_dict(
    struct: struct_pb2.Struct, where: str, violations: list[FieldViolation]
) -> dict[str, Any]:
    """``struct`` as JSON-compatible Python; a NaN or infinity anywhere in it is appended to
    ``violations`` (its path under ``where``) and becomes ``None``."""
    return {k: _value(v, f"{where}.{k}", violations) for k, v in struct.fields.items()}


def json_object(text: str, where: str, violations: list[FieldViolation]) -> dict[str, Any] | None:
    """The JSON object in ``text`` (a schema sent as JSON text), as :func:`struct_to_dict`
    would give it; None (and a violation at ``where``) when ``text`` is not a JSON object or
    holds NaN or ±Infinity (which Python's json reads, and JSON does not have)."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        problem = str(exc) if "JSON number" in str(exc) else "not valid JSON"
        violations.append(FieldViolation(where, problem))
        return None
    if not isinstance(value, dict):
        violations.append(FieldViolation(where, "must be a JSON object"))
        return None
    return value


def _value(value: struct_pb2.Value, where: str, violations: list[FieldViolation]) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            violations.append(FieldViolation(where, "NaN and ±Infinity are not JSON numbers"))
            return None
        return int(number) if number.is_integer() and abs(number) <= _EXACT else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value, where, violations)
    if kind == "list_value":
        return [
            _value(item, f"{where}[{i}]", violations)
            for i, item in enumerate(value.list_value.values)
        ]
    return None  # null_value, or unset (JSON null)


def timestamp_problem(ts: timestamp_pb2.Timestamp) -> str | None:
    """What makes ``ts`` out of its type's range, or None when it is valid."""
    if not 0 <= ts.nanos < 1_000_000_000:
        return f"nanos must be 0 to 999999999, not {ts.nanos}"
    if not MIN_TIMESTAMP_S <= ts.seconds <= MAX_TIMESTAMP_S:
        return "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
    return None


def timestamp_seconds(
    ts: timestamp_pb2.Timestamp, where: str, violations: list[FieldViolation]
) -> float | None:
    """``ts`` in seconds since the epoch; None (and a violation) when out of range."""
    problem = timestamp_problem(ts)
    if problem is not None:
        violations.append(FieldViolation(where, problem))
        return None
    return ts.seconds + ts.nanos / 1e9


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """Unix seconds as a Timestamp (nanosecond precision)."""
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    """Seconds as a Duration (nanosecond precision)."""
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out
