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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self


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

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def overriding(
        self, *, retryable: bool | None = None, counts_against_breaker: bool | None = None
    ) -> Self:
        """This error, with its kind's ``retryable``/``counts_against_breaker`` replaced for
        this instance only (``None`` keeps the kind's default). Returns ``self``."""
        if retryable is not None:
            self.retryable = retryable
        if counts_against_breaker is not None:
            self.counts_against_breaker = counts_against_breaker
        return self


class InvalidArgument(SwitchboardError):
    """The request is malformed; retrying it unchanged cannot help."""

    def __init__(self, message: str, violations: Sequence[FieldViolation] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One bad field, named in both the message and the details."""
        return cls(f"{field}: {description}", [FieldViolation(field, description)])


class NotFound(SwitchboardError):
    """The named thing (agent, session…) does not exist for this caller."""


class FailedPrecondition(SwitchboardError):
    """The request is well formed but the system is not in a state to serve it."""


class Unauthenticated(SwitchboardError):
    """No valid credentials."""


class PermissionDenied(SwitchboardError):
    """Valid credentials that do not allow this call."""


class ResourceExhausted(SwitchboardError):
    """A limit, quota or budget is exhausted; ``retry_after_s`` says when to try again."""

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        violations: Sequence[QuotaViolation] = (),
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.violations = tuple(violations)


class DeadlineExceeded(SwitchboardError):
    """The call's deadline passed (or would pass before an attempt could finish)."""

    retryable = True
    counts_against_breaker = True


class Unavailable(SwitchboardError):
    """Transiently unable to serve: an upstream is down, overloaded, or dropped the stream."""

    retryable = True
    counts_against_breaker = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Internal(SwitchboardError):
    """A fault on our side (or an upstream misconfiguration) that the caller cannot fix."""
