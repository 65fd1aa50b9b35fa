"""Typed exceptions for a call's status, with its rich details decoded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from switchboard_client import rpc


@dataclass(frozen=True, slots=True)
class Violation:
    """A bad field (``BadRequest``) or an exhausted limit (``QuotaFailure``)."""

    subject: str
    description: str


class SwitchboardError(Exception):
    """A call failed; ``code`` and ``message`` are the status, the rest its details.

    ``reason`` is ``google.rpc.ErrorInfo.reason`` (UPPER_SNAKE, e.g. ``AGENT_NOT_FOUND``,
    ``UPSTREAM_QUOTA_EXHAUSTED``, ``CONTEXT_WINDOW_EXCEEDED``: branch on it, not on the
    message), ``metadata`` its facts (``target``, ``agent``…), ``request_id`` the call's id
    (from ErrorInfo or the ``x-request-id`` trailer): quote it when reporting a problem.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        violations: tuple[Violation, ...] = (),
        retry_after_s: float | None = None,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.violations = violations
        self.retry_after_s = retry_after_s
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.request_id = request_id


class InvalidArgumentError(SwitchboardError): ...


class NotFoundError(SwitchboardError): ...


class UnauthenticatedError(SwitchboardError): ...


class PermissionDeniedError(SwitchboardError): ...


class ResourceExhaustedError(SwitchboardError): ...


class FailedPreconditionError(SwitchboardError): ...


class DeadlineExceededError(SwitchboardError): ...


class UnavailableError(SwitchboardError): ...


class InternalError(SwitchboardError): ...


_BY_CODE: dict[grpc.StatusCode, type[SwitchboardError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def from_rpc_error(error: grpc.RpcError) -> SwitchboardError:
    """The typed exception for a failed call, its ErrorInfo/BadRequest/QuotaFailure/RetryInfo
    decoded."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    violations: list[Violation] = []
    retry_after: float | None = None
    info = rpc.ErrorInfo()
    trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for detail in rpc.details(trailers):
        if isinstance(detail, rpc.ErrorInfo):
            info = detail
        elif isinstance(detail, rpc.BadRequest):
            violations += [Violation(v.field, v.description) for v in detail.field_violations]
        elif isinstance(detail, rpc.QuotaFailure):
            violations += [Violation(v.subject, v.description) for v in detail.violations]
        elif isinstance(detail, rpc.RetryInfo):
            delay = detail.retry_delay
            retry_after = delay.seconds + delay.nanos / 1e9
    request_id = info.metadata.get("request_id", "") or _trailer(error, "x-request-id")
    kind = _BY_CODE.get(code, SwitchboardError)
    return kind(
        code,
        message,
        violations=tuple(violations),
        retry_after_s=retry_after,
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        request_id=request_id,
    )


def _trailer(error: grpc.RpcError, name: str) -> str:
    trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for item in trailers or ():
        key, value = item[0], item[1]
        if key == name and isinstance(value, str):
            return value
    return ""
