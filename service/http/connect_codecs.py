"""The Connect door's codecs: protobuf binary and JSON, strict, and never raising on a bad body.

connectrpc's own JSON codec ignores what it does not know, as the Connect protocol allows: a
misspelled field, or an enum value given in the wrong form (``"role": "user"`` for
``ROLE_USER``), vanishes, and the caller is told something else ("role is required"). Here a
body that does not decode becomes an :class:`~service.interceptors.decode.Undecodable` naming
the field at fault and, for an enum, the values it takes; the chain's decode layer refuses it
with INVALID_ARGUMENT and a BadRequest, after the call is traced and counted, as the gRPC door
does with a body that does not parse.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from connectrpc.codec import Codec
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from service.interceptors.decode import Undecodable

M = TypeVar("M", bound=Message)
MAX_PROBLEM_CHARS = 300
# Types whose JSON form is not an object of their fields (protobuf's JSON mapping).
_OPAQUE_JSON = frozenset(
    {
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.Empty",
    }
)


class BinaryCodec(Codec[Message, Any]):
    """``application/proto``: a body that does not parse is an Undecodable."""

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M | Undecodable:
        try:
            return message_class.FromString(bytes(data))
        except (DecodeError, RecursionError, ValueError):
            name = message_class.DESCRIPTOR.full_name
            return Undecodable(f"the request body is not a valid {name}", len(data))


class JsonCodec(Codec[Message, Any]):
    """``application/json``: protobuf's JSON mapping, refusing unknown fields and enum
    values (an Undecodable that names the field and the values it takes)."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json_format.MessageToJson(message).encode()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M | Undecodable:
        message = message_class()
        try:
            json_format.Parse(bytes(data), message)
        except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
            descriptor: Descriptor = message_class.DESCRIPTOR  # type: ignore[assignment]
            return undecodable_json(bytes(data), descriptor, exc)
        return message


def undecodable_json(data: bytes, descriptor: Descriptor, exc: BaseException) -> Undecodable:
    """Why ``data`` is not a JSON ``descriptor``: the first unknown field or enum value,
    else protobuf's own words (cut short)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return Undecodable("the request body is not valid JSON", len(data))
    if not isinstance(value, dict):
        return Undecodable(f"the request body must be a JSON object ({descriptor.name})", len(data))
    found = first_unknown(value, descriptor, "")
    if found is not None:
        field, problem = found
        return Undecodable(problem, len(data), field)
    words = str(exc) if isinstance(exc, json_format.ParseError) else ""
    words = words if len(words) <= MAX_PROBLEM_CHARS else words[: MAX_PROBLEM_CHARS - 1] + "…"
    return Undecodable(words or f"the request body is not a valid {descriptor.name}", len(data))


def first_unknown(
    value: dict[str, Any], descriptor: Descriptor, path: str
) -> tuple[str, str] | None:
    """``(field path, problem)`` for the first key of ``value`` (a JSON object of message
    ``descriptor``) that names no field, or enum string that names no value; None if none.
    Paths use the contract's field names (``messages[0].role``)."""
    if descriptor.full_name in _OPAQUE_JSON:
        return None
    for key, item in value.items():
        field = descriptor.fields_by_camelcase_name.get(key) or descriptor.fields_by_name.get(key)
        where = f"{path}.{key}" if path else key
        if field is None:
            known = ", ".join(f.name for f in descriptor.fields)
            return where, f"no such field in {descriptor.full_name} (fields: {known})"
        where = f"{path}.{field.name}" if path else field.name
        found = _first_in_field(field, item, where)
        if found is not None:
            return found
    return None


def _first_in_field(field: FieldDescriptor, item: Any, where: str) -> tuple[str, str] | None:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        if not isinstance(item, dict):
            return None
        value_field = message.fields_by_name["value"]
        for key, entry in item.items():
            found = _first_in_value(value_field, entry, f"{where}[{key}]")
            if found is not None:
                return found
        return None
    if field.is_repeated:
        if not isinstance(item, list):
            return None
        for i, entry in enumerate(item):
            found = _first_in_value(field, entry, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    return _first_in_value(field, item, where)


def _first_in_value(field: FieldDescriptor, item: Any, where: str) -> tuple[str, str] | None:
    enum = field.enum_type
    if enum is not None and isinstance(item, str) and item not in enum.values_by_name:
        if enum.full_name == "google.protobuf.NullValue":
            return None
        names = ", ".join(v.name for v in enum.values if not v.name.endswith("_UNSPECIFIED"))
        return where, f"unknown value {item!r} for {enum.full_name} (one of {names})"
    if field.message_type is not None and isinstance(item, dict):
        return first_unknown(item, field.message_type, where)
    return None
