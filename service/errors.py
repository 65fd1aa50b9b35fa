"""The errors the service raises.

Every error derives from :class:`SwitchboardError`. Each kind says whether a retry may help
(``retryable``) and whether it is the upstream's fault (``counts_against_breaker``). Exactly one
module, :mod:`service.api.errors`, turns them into gRPC statuses; nothing here imports grpc.

Messages are shown to callers: they say what is wrong and never carry secrets, prompts or
stack traces.

The class attributes are each kind's defaults. Where one instance must differ (an upstream
quota 429 is a ResourceExhausted that should also count against the target's breaker, an
upstream auth failure an Internal that should), :meth:`SwitchboardError.overriding` sets
them on that instance; code that reads ``error.retryable`` sees the override.

Each error also has a ``reason`` (UPPER_SNAKE, one of :class:`Reason`: the kind's default, or
a more precise one given where it is raised) and ``metadata`` (facts such as the ``target`` or
``agent``), which :mod:`service.api.errors` sends as ``google.rpc.ErrorInfo`` so a client can
branch on what happened without parsing the message.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self


class Reason(enum.StrEnum):
    """Why a call failed, as ``google.rpc.ErrorInfo.reason`` (AIP-193: UPPER_SNAKE, stable,
    unique within the ``switchboard.dev`` domain). docs/contract.md's error table lists them."""

    # the kinds' defaults
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    # the caller and the gateway
    AGENT_NOT_FOUND = "AGENT_NOT_FOUND"
    AGENT_NOT_ALLOWED = "AGENT_NOT_ALLOWED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    CREDENTIALS_MISSING = "CREDENTIALS_MISSING"
    CREDENTIALS_MALFORMED = "CREDENTIALS_MALFORMED"
    CREDENTIALS_INVALID = "CREDENTIALS_INVALID"
    CREDENTIALS_AMBIGUOUS = "CREDENTIALS_AMBIGUOUS"
    SCOPE_MISSING = "SCOPE_MISSING"  # the key lacks the scope the method needs (admin)
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    RATE_LIMITED = "RATE_LIMITED"
    RATE_LIMITER_UNAVAILABLE = "RATE_LIMITER_UNAVAILABLE"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
    SERVER_BUSY = "SERVER_BUSY"
    DRAINING = "DRAINING"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    NO_TIME_LEFT = "NO_TIME_LEFT"
    GUARD_BLOCKED = "GUARD_BLOCKED"  # an input guard blocked the request (docs/guards.md)
    WORKFLOW_LIMIT = "WORKFLOW_LIMIT"  # a run would pass a limit (docs/workflows.md)
    RUN_NOT_FOUND = "RUN_NOT_FOUND"  # no run with that id for the caller's tenant
    RUN_BUSY = "RUN_BUSY"  # another call is running the run now (docs/tools.md)
    RUN_CANCELLED = "RUN_CANCELLED"  # the run was cancelled (CancelRun)
    APPROVAL_DENIED = "APPROVAL_DENIED"  # a call with on_deny: fail was denied (docs/tools.md)
    # the upstream (a target's provider)
    UPSTREAM_INVALID_REQUEST = "UPSTREAM_INVALID_REQUEST"
    CONTEXT_WINDOW_EXCEEDED = "CONTEXT_WINDOW_EXCEEDED"
    UPSTREAM_CONTENT_POLICY = "UPSTREAM_CONTENT_POLICY"
    UPSTREAM_AUTH_FAILED = "UPSTREAM_AUTH_FAILED"
    UPSTREAM_PERMISSION_DENIED = "UPSTREAM_PERMISSION_DENIED"
    UPSTREAM_MODEL_NOT_FOUND = "UPSTREAM_MODEL_NOT_FOUND"
    UPSTREAM_QUOTA_EXHAUSTED = "UPSTREAM_QUOTA_EXHAUSTED"
    UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED"
    UPSTREAM_OVERLOADED = "UPSTREAM_OVERLOADED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT"
    UPSTREAM_CONNECTION_FAILED = "UPSTREAM_CONNECTION_FAILED"
    UPSTREAM_MALFORMED_RESPONSE = "UPSTREAM_MALFORMED_RESPONSE"
    UPSTREAM_MISCONFIGURED = "UPSTREAM_MISCONFIGURED"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: ``field`` is a path such as ``messages[0].role``."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class QuotaViolation:
    """One exhausted limit: ``subject`` is who it binds, ``description`` which limit."""

    subject: str
    description: str


class SwitchboardError(Exception):
    """Base of everything the service raises on purpose."""

    retryable: bool = False
    counts_against_breaker: bool = False
    reason: Reason = Reason.INTERNAL

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = {}

    def overriding(
        self,
        *,
        retryable: bool | None = None,
        counts_against_breaker: bool | None = None,
        reason: Reason | None = None,
    ) -> Self:
        """This error, with its kind's ``retryable``/``counts_against_breaker``/``reason``
        replaced for this instance only (``None`` keeps the kind's default). Returns ``self``."""
        if retryable is not None:
            self.retryable = retryable
        if counts_against_breaker is not None:
            self.counts_against_breaker = counts_against_breaker
        if reason is not None:
            self.reason = reason
        return self

    def about(self, **facts: str) -> Self:
        """This error with ``facts`` (``target=``, ``agent=``…) added to its metadata where
        not already set (the innermost code knows best). Returns ``self``."""
        for key, value in facts.items():
            if value:
                self.metadata.setdefault(key, value)
        return self


class InvalidArgument(SwitchboardError):
    """The request is malformed; retrying it unchanged cannot help."""

    reason = Reason.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        violations: Sequence[FieldViolation] = (),
        *,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.violations = tuple(violations)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One bad field, named in both the message and the details."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


class NotFound(SwitchboardError):
    """The named thing (agent, session…) does not exist for this caller."""

    reason = Reason.NOT_FOUND


class FailedPrecondition(SwitchboardError):
    """The request is well formed but the system is not in a state to serve it."""

    reason = Reason.FAILED_PRECONDITION


class Unauthenticated(SwitchboardError):
    """No valid credentials."""

    reason = Reason.UNAUTHENTICATED


class PermissionDenied(SwitchboardError):
    """Valid credentials that do not allow this call."""

    reason = Reason.PERMISSION_DENIED


class ResourceExhausted(SwitchboardError):
    """A limit, quota or budget is exhausted; ``retry_after_s`` says when to try again."""

    reason = Reason.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        violations: Sequence[QuotaViolation] = (),
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s
        self.violations = tuple(violations)


class DeadlineExceeded(SwitchboardError):
    """The call's deadline passed (or would pass before an attempt could finish)."""

    retryable = True
    counts_against_breaker = True
    reason = Reason.DEADLINE_EXCEEDED


class Unavailable(SwitchboardError):
    """Transiently unable to serve: an upstream is down, overloaded, or dropped the stream."""

    retryable = True
    counts_against_breaker = True
    reason = Reason.UNAVAILABLE

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, reason: Reason | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


class Internal(SwitchboardError):
    """A fault on our side (or an upstream misconfiguration) that the caller cannot fix."""
