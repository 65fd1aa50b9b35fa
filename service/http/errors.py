"""The OpenAI door's one error table: a failed call's status → HTTP status and OpenAI's error
body (``{"error": {"message", "type", "param", "code"}}``, OpenAI API reference, "Error
codes").

The status code is the one :mod:`service.api.errors` gives the domain error (one code per
kind of :class:`service.errors.SwitchboardError`), so both doors say the same thing: the
``type`` names the kind (the names of the OpenAI SDK's exception classes), ``code`` is the
ErrorInfo reason in lower case (``agent_not_found``, ``rate_limited``…), ``param`` the first
BadRequest field. A delay to wait (RetryInfo) is sent as ``retry-after`` (whole seconds, as
RFC 9110 has it) and ``retry-after-ms`` (which the OpenAI SDKs honour), both rounded up by
:mod:`service.retry_after`, and the request id as ``x-request-id``.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from service.http.context import Failure
from service.retry_after import delay_ms, delay_seconds

# status code → (HTTP status, OpenAI error type)
_TABLE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "conflict_error"),
    grpc.StatusCode.ABORTED: (409, "conflict_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "not_implemented_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}
_SERVER_ERROR = (500, "api_error")


def http_status(failure: Failure) -> int:
    return _TABLE.get(failure.code, _SERVER_ERROR)[0]


def error_body(failure: Failure) -> dict[str, Any]:
    """OpenAI's error object for ``failure`` (also what a stream sends as its last event)."""
    kind = _TABLE.get(failure.code, _SERVER_ERROR)[1]
    return {
        "error": {
            "message": failure.message,
            "type": kind,
            "param": failure.field or None,
            "code": (failure.reason or failure.code.name).lower(),
        }
    }


def error_headers(failure: Failure) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if failure.retry_after_s is not None:
        headers += [
            (b"retry-after", str(delay_seconds(failure.retry_after_s)).encode()),
            (b"retry-after-ms", str(delay_ms(failure.retry_after_s)).encode()),
        ]
    if failure.request_id:
        headers.append((b"x-request-id", failure.request_id.encode()))
    return headers


def error_json(failure: Failure) -> bytes:
    return json.dumps(error_body(failure)).encode()
