"""The one place where errors become gRPC statuses, with rich details where they help.

``SwitchboardError`` kinds map to status codes in ``_CODES``. Every status carries
``google.rpc.ErrorInfo`` (AIP-193): the error's ``reason`` (UPPER_SNAKE, see
:class:`service.errors.Reason`), domain ``switchboard.dev``, and metadata: the error's own facts
(``target``, ``agent``…) and the call's ``request_id``. InvalidArgument also carries
``google.rpc.BadRequest``, ResourceExhausted ``google.rpc.QuotaFailure``, and any error with a
retry delay ``google.rpc.RetryInfo``. The request id is also sent as the ``x-request-id``
trailer, so a caller can quote it without decoding details. Anything else is INTERNAL with a
generic message: a caller never sees UNKNOWN or a stack trace (the chain's fault layer logs
it, once per kind and window: :mod:`service.interceptors.faults`). Messages and violation
lists are bounded (:mod:`service.api.trailers`) so the status always fits the client's
metadata limit.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service import context as call_context
from service import errors
from service.api.trailers import bad_request, bounded_message
from service.retry_after import delay_ms

_CODES: dict[type[errors.SwitchboardError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def code_for(error: errors.SwitchboardError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


DOMAIN = "switchboard.dev"
"""``ErrorInfo.domain`` of every status Switchboard sends."""
REQUEST_ID_TRAILER = "x-request-id"
"""The trailer that carries the call's request id on an error status (the header a caller
may send it in, :data:`service.interceptors.context.REQUEST_ID_HEADER`)."""
MAX_INFO_VALUE_CHARS = 128
"""An ErrorInfo metadata value (an agent name a caller typed…) is cut to this length."""


def error_info(reason: str, metadata: dict[str, str]) -> error_details_pb2.ErrorInfo:
    """ErrorInfo for ``reason`` in the ``switchboard.dev`` domain; metadata values cut short."""
    return error_details_pb2.ErrorInfo(
        reason=reason,
        domain=DOMAIN,
        metadata={k: _cut(v) for k, v in metadata.items() if v},
    )


def _cut(value: str) -> str:
    if len(value) <= MAX_INFO_VALUE_CHARS:
        return value
    return value[: MAX_INFO_VALUE_CHARS - 1] + "…"


def to_status(exc: BaseException) -> grpc.Status:
    """The status (code, message, details and request id trailers) a caller should see for
    ``exc``; the request id is the current call's (:func:`service.context.current`)."""
    request_id = call_context.current().request_id
    facts = {"request_id": request_id}
    if not isinstance(exc, errors.SwitchboardError):
        info = error_info(errors.Reason.INTERNAL, facts)
        return _status(grpc.StatusCode.INTERNAL, "internal error", [_pack(info)], request_id)
    details: list[any_pb2.Any] = [_pack(error_info(exc.reason, {**exc.metadata, **facts}))]
    if isinstance(exc, errors.InvalidArgument) and exc.violations:
        details.append(_pack(bad_request(exc.violations)))
    if isinstance(exc, errors.ResourceExhausted) and exc.violations:
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=v.subject, description=v.description
                )
                for v in exc.violations
            ]
        )
        details.append(_pack(quota))
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        details.append(_pack(retry_info(retry_after)))
    return _status(code_for(exc), bounded_message(exc.message), details, request_id)


def retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    """RetryInfo with the delay rounded up to the millisecond (:mod:`service.retry_after`)."""
    millis = delay_ms(seconds)
    return error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=millis // 1000, nanos=(millis % 1000) * 10**6)
    )


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def _status(
    code: grpc.StatusCode, message: str, details: list[any_pb2.Any], request_id: str
) -> grpc.Status:
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=details)
    status = rpc_status.to_status(proto)
    if not request_id:
        return status
    trailers = (*status.trailing_metadata, (REQUEST_ID_TRAILER, request_id))
    return _Status(status.code, status.details, trailers)


class _Status(grpc.Status):
    """A status with extra trailers (grpc_status builds one with the details trailer only)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, Any], ...]
    ) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


async def abort(context: grpc.aio.ServicerContext[object, object], exc: BaseException) -> None:
    """End the call with the status for ``exc``. Always raises (grpc's AbortError, whose
    ``__cause__`` is ``exc``: the fault layer logs what an INTERNAL status hides)."""
    status = to_status(exc)
    try:
        await context.abort(status.code, status.details, status.trailing_metadata)
    except grpc.aio.AbortError as aborted:
        raise aborted from exc
