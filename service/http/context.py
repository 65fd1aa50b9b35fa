"""The servicer context of a call that came through an HTTP door.

The interceptor chain and the servicers read a call through a few methods of
``grpc.aio.ServicerContext`` (metadata, remaining time, abort, the final code). A door that
calls the servicer directly hands them a :class:`DoorContext` with the same methods, so the
same layers (tracing, context, observe, faults, decode, auth, rate limits) and the same
servicer run for every door. A refusal ends as in grpc: ``abort`` records the status and
raises ``grpc.aio.AbortError``; the door then reads :meth:`DoorContext.failure` and answers
in its own protocol's terms (its own error table).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2

from service.api.errors import REQUEST_ID_TRAILER
from service.retry_after import delay_seconds


class Metadatum(NamedTuple):
    """One header as grpc.aio hands metadata to servicers (``key``, ``value``; also a pair):
    opentelemetry-instrumentation-grpc reads the attributes."""

    key: str
    value: str


Metadata = tuple[tuple[str, str], ...]
_DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class Failure:
    """How a call failed, as the gRPC door would have said it: the status code, its message,
    and the facts of its details that other protocols carry in their own way."""

    code: grpc.StatusCode
    message: str
    reason: str = ""  # google.rpc.ErrorInfo.reason, e.g. "AGENT_NOT_FOUND"
    retry_after_s: float | None = None  # google.rpc.RetryInfo.retry_delay
    field: str = ""  # the first google.rpc.BadRequest field violation
    request_id: str = ""
    details: tuple[Any, ...] = ()  # the packed google.protobuf.Any details, as sent

    @property
    def retry_after_header(self) -> str | None:
        """``Retry-After`` in whole seconds, rounded up (:mod:`service.retry_after`), or None."""
        if self.retry_after_s is None:
            return None
        return str(delay_seconds(self.retry_after_s))


class DoorContext:
    """What the chain and the servicers use of ``grpc.aio.ServicerContext``, for one call.

    ``metadata``: the request's headers (lower-case names), as gRPC metadata.
    ``timeout_s``: the caller's deadline from now (a door's timeout header), or None.
    """

    __slots__ = ("_code", "_deadline", "_details", "_metadata", "_peer", "_trailers")

    def __init__(self, metadata: Metadata, timeout_s: float | None = None, peer: str = "") -> None:
        self._metadata = tuple(Metadatum(key, value) for key, value in metadata)
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._peer = grpc_peer(peer)
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailers: Sequence[tuple[str, Any]] = ()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def peer(self) -> str:
        return self._peer

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, Any]] = (),
    ) -> NoReturn:
        """Record the status and end the call, as grpc does (raises ``AbortError``)."""
        self._code, self._details, self._trailers = code, details, trailing_metadata
        raise grpc.aio.AbortError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailers = trailing_metadata

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Sequence[tuple[str, Any]]:
        return self._trailers

    async def send_initial_metadata(self, _metadata: Sequence[tuple[str, Any]]) -> None:
        return None

    def failure(self) -> Failure:
        """The status the call was aborted with (INTERNAL when it was not aborted: an
        exception escaped the chain, which a door reports as a generic server error)."""
        if self._code is None or self._code is grpc.StatusCode.OK:
            return Failure(grpc.StatusCode.INTERNAL, "internal error", reason="INTERNAL")
        reason, retry, field, request_id = "", None, "", ""
        details: tuple[Any, ...] = ()
        for key, value in self._trailers:
            if key == REQUEST_ID_TRAILER and isinstance(value, str):
                request_id = value
            elif key == _DETAILS_TRAILER and isinstance(value, bytes):
                status = status_pb2.Status.FromString(value)
                details = tuple(status.details)
                reason, retry, field = _facts(status)
        return Failure(self._code, self._details, reason, retry, field, request_id, details)


def _facts(status: status_pb2.Status) -> tuple[str, float | None, str]:
    reason, retry, field = "", None, ""
    for packed in status.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            packed.Unpack(delay)
            retry = delay.retry_delay.seconds + delay.retry_delay.nanos / 1e9
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            if bad.field_violations:
                field = bad.field_violations[0].field
    return reason, retry, field


def grpc_peer(address: str) -> str:
    """``address`` in grpc's peer form (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``; a door may
    give ``host:port`` or grpc's form). Anything else, an unknown peer included, is a
    ``unix:`` peer, which the instrumentation does not try to parse."""
    if address.startswith(("ipv4:", "ipv6:", "unix:")):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return f"unix:{address}"
    host = host.strip("[]")
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


def metadata_of(headers: Sequence[tuple[bytes, bytes]]) -> Metadata:
    """ASGI headers as gRPC metadata: names lower-case (ASGI gives them so), values text."""
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers)
