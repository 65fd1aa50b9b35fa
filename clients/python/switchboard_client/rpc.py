"""The ``google.rpc`` error details this client decodes (Status, ErrorInfo, BadRequest,
QuotaFailure, RetryInfo), defined here so the client needs only grpcio and protobuf.

The messages are built at import from a descriptor under a private package
(``switchboard_client.rpc``) with the same fields and numbers as googleapis'
google/rpc/status.proto and error_details.proto, so they decode the same bytes, and they
never clash with googleapis-common-protos when both are installed. A detail is recognised by
its ``type_url`` (``type.googleapis.com/google.rpc.ErrorInfo``).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory

_PACKAGE = "switchboard_client.rpc"
_F = descriptor_pb2.FieldDescriptorProto
_STRING, _INT32, _MESSAGE = _F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_MESSAGE
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _message(
    name: str, fields: list[tuple[str, int, int, int, str]], nested: list[Any] | None = None
) -> descriptor_pb2.DescriptorProto:
    out = descriptor_pb2.DescriptorProto(name=name)
    for field, number, kind, label, type_name in fields:
        added = out.field.add(name=field, number=number, type=kind, label=label)
        if type_name:  # proto2: an empty type_name would still count as set
            added.type_name = type_name
    out.nested_type.extend(nested or [])
    return out


def _build() -> descriptor_pool.DescriptorPool:
    entry = _message(
        "MetadataEntry",
        [("key", 1, _STRING, _OPTIONAL, ""), ("value", 2, _STRING, _OPTIONAL, "")],
    )
    entry.options.map_entry = True
    p = f".{_PACKAGE}."
    file = descriptor_pb2.FileDescriptorProto(
        name="switchboard_client/rpc.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    file.message_type.extend(
        [
            _message(
                "Status",
                [
                    ("code", 1, _INT32, _OPTIONAL, ""),
                    ("message", 2, _STRING, _OPTIONAL, ""),
                    ("details", 3, _MESSAGE, _REPEATED, ".google.protobuf.Any"),
                ],
            ),
            _message(
                "ErrorInfo",
                [
                    ("reason", 1, _STRING, _OPTIONAL, ""),
                    ("domain", 2, _STRING, _OPTIONAL, ""),
                    ("metadata", 3, _MESSAGE, _REPEATED, p + "ErrorInfo.MetadataEntry"),
                ],
                [entry],
            ),
            _message(
                "BadRequest",
                [("field_violations", 1, _MESSAGE, _REPEATED, p + "BadRequest.FieldViolation")],
                [
                    _message(
                        "FieldViolation",
                        [
                            ("field", 1, _STRING, _OPTIONAL, ""),
                            ("description", 2, _STRING, _OPTIONAL, ""),
                        ],
                    )
                ],
            ),
            _message(
                "QuotaFailure",
                [("violations", 1, _MESSAGE, _REPEATED, p + "QuotaFailure.Violation")],
                [
                    _message(
                        "Violation",
                        [
                            ("subject", 1, _STRING, _OPTIONAL, ""),
                            ("description", 2, _STRING, _OPTIONAL, ""),
                        ],
                    )
                ],
            ),
            _message(
                "RetryInfo",
                [("retry_delay", 1, _MESSAGE, _OPTIONAL, ".google.protobuf.Duration")],
            ),
        ]
    )
    pool = descriptor_pool.DescriptorPool()
    for dependency in (any_pb2.DESCRIPTOR, duration_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(file)
    return pool


_POOL = _build()


def _class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


Status = _class("Status")
ErrorInfo = _class("ErrorInfo")
BadRequest = _class("BadRequest")
QuotaFailure = _class("QuotaFailure")
RetryInfo = _class("RetryInfo")
DETAILS: dict[str, Any] = {
    "google.rpc.ErrorInfo": ErrorInfo,
    "google.rpc.BadRequest": BadRequest,
    "google.rpc.QuotaFailure": QuotaFailure,
    "google.rpc.RetryInfo": RetryInfo,
}
STATUS_TRAILER = "grpc-status-details-bin"


def details(trailers: Any) -> list[Any]:
    """The known google.rpc details in a call's trailers, decoded (unknown ones skipped)."""
    found = []
    for item in trailers or ():
        if item[0] == STATUS_TRAILER and isinstance(item[1], bytes):
            status = Status.FromString(item[1])
            for packed in status.details:
                kind = DETAILS.get(packed.type_url.rpartition("/")[2])
                if kind is not None:
                    found.append(kind.FromString(packed.value))
    return found
