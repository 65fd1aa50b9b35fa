"""What the SDK-backed providers share: an attempt's time limit, Retry-After, sanitised text,
and what an upstream error means (:class:`Fault`, :func:`classify` over a provider's table of
:class:`Rule` rows, :func:`upstream_error`).

No SDK is imported here; each provider module maps its own SDK's exceptions (the HTTP
transport's, aiohttp's, are read here: both SDKs share it).
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import re
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
import httpx2

from service.deadline import Deadline
from service.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    QuotaViolation,
    Reason,
    ResourceExhausted,
    SwitchboardError,
    Unavailable,
)
from service.providers.base import TargetSpec
from service.secrets import Secret
from service.watchdog import Alarms, Expired, Watchdog

T = TypeVar("T")

MAX_UPSTREAM_MESSAGE_CHARS = 300
"""Upstream error text quoted to callers is cut to this length."""

# Key-shaped tokens (OpenAI "sk-…", Anthropic "sk-ant-…", bearer tokens) never reach a caller,
# even when an upstream quotes one back in an error message.
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk|key)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\b(bearer|x-api-key:?|api[_ -]?key:?)\s+\S+")
_SPACE = re.compile(r"\s+")


class AttemptLimit:
    """The time one upstream attempt may take: the call's deadline, or the target's
    ``timeout_s`` from now when that is sooner. ``why`` names which, for error messages.

    Built inside the attempt (it needs the running loop): the reads of the answer's stream
    share one timer (:class:`service.watchdog.Watchdog`), not a timeout per chunk.
    """

    __slots__ = ("_alarms", "_watchdog", "deadline", "why")

    def __init__(self, deadline: Deadline, why: str, alarms: Alarms | None = None) -> None:
        self.deadline = deadline
        self.why = why
        self._alarms = alarms  # the timers the provider's attempts share
        self._watchdog: Watchdog | None = None

    @classmethod
    def of(
        cls, deadline: Deadline, timeout_s: float | None, alarms: Alarms | None = None
    ) -> AttemptLimit:
        if timeout_s is not None and time.monotonic() + timeout_s < deadline.at:
            limit = Deadline.after(timeout_s)
            return cls(limit, f"the target's timeout_s of {timeout_s:g}s", alarms)
        return cls(deadline, "the call's deadline", alarms)

    def remaining(self) -> float:
        return self.deadline.remaining()

    def client_timeout_s(self) -> float:
        """What is left, in seconds, as the HTTP client's own timeout: at least 1 ms (the
        limit itself ends the attempt; a zero or negative timeout would mean none)."""
        return max(self.deadline.remaining(), 0.001)

    async def run(self, awaitable: Awaitable[T], target: str) -> T:
        """``awaitable``'s result, cancelling it when the limit passes first.

        Raises:
            DeadlineExceeded: no time was left, or the limit passed while waiting.
        """
        left = self.deadline.remaining()
        if left <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise self.exceeded(target)
        try:
            async with asyncio.timeout(left):
                return await awaitable
        except TimeoutError as exc:
            raise self.exceeded(target) from exc

    async def next(self, iterator: AsyncIterator[T], target: str) -> T:
        """The iterator's next item within the limit (an ``anext`` that honours it).

        Raises:
            StopAsyncIteration: the iterator is exhausted.
            DeadlineExceeded: the limit passed first.
        """
        watchdog = self._watchdog
        if watchdog is None:
            watchdog = Watchdog(deadline_at=self.deadline.at, alarms=self._alarms)
            self._watchdog = watchdog
        try:
            return await watchdog.read(iterator)
        except Expired:
            raise self.exceeded(target) from None

    def close(self) -> None:
        """Stop the timer (the attempt is over). Idempotent."""
        if self._watchdog is not None:
            self._watchdog.close()

    def exceeded(self, target: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"target {target!r} did not answer within {self.why}", reason=Reason.UPSTREAM_TIMEOUT
        ).about(target=target)


TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx2.HTTPError, aiohttp.ClientError)
"""What a provider's HTTP sending can raise when the transport fails: aiohttp's errors (every
request goes out through aiohttp: service/providers/sending.py), and httpx2's, which the SDKs
raise when they send themselves (the providers' ``map_error`` reads both)."""


def transport_fault(exc: BaseException) -> type[DeadlineExceeded] | type[Unavailable] | None:
    """What an HTTP transport failure ``exc``, or one under it, really was: ``DeadlineExceeded``
    for a timeout, ``Unavailable`` for a connection refused, reset or dropped mid-body;
    ``None`` when no aiohttp error is (or caused) it.

    An aiohttp error is read by what it is, whether it arrives as itself (Switchboard's own
    sending) or under an SDK's wrapper: the SDKs' aiohttp transport (``DefaultAioHttpClient``)
    re-raises every aiohttp connection error as ``httpx2.ConnectTimeout``, so a refused
    connection or a stream cut short would otherwise read as a timeout.
    """
    cause: BaseException | None = exc
    for _ in range(4):  # SDK error ← httpx2 error ← aiohttp error
        if cause is None:
            return None
        if isinstance(cause, aiohttp.ClientError):
            return DeadlineExceeded if isinstance(cause, TimeoutError) else Unavailable
        cause = cause.__cause__
    return None


def retry_after_s(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The delay an upstream asked for: ``retry-after-ms`` (milliseconds), else ``retry-after``
    (seconds or an HTTP date). ``None`` when absent or unreadable; never negative."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def sanitize(text: str, secret: Secret | None = None) -> str:
    """Upstream error text fit to show a caller: the target's key and anything key-shaped
    replaced by ``***``, whitespace collapsed, cut to ``MAX_UPSTREAM_MESSAGE_CHARS``."""
    if secret is not None and secret.reveal():
        text = text.replace(secret.reveal(), "***")
    text = _KEY_LIKE.sub("***", text)
    text = _BEARER.sub(lambda m: f"{m[1]} ***", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > MAX_UPSTREAM_MESSAGE_CHARS:
        text = text[: MAX_UPSTREAM_MESSAGE_CHARS - 1] + "…"
    return text


QUOTA_DESCRIPTION = "upstream quota, credit or spend limit"
"""The QuotaFailure description of an exhausted upstream account."""


class Fault(enum.Enum):
    """What an upstream error means, whatever status, type or code carried it."""

    INVALID_REQUEST = "invalid_request"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"
    PERMISSION = "permission"
    MODEL_NOT_FOUND = "model_not_found"
    QUOTA = "quota"
    RATE_LIMIT = "rate_limit"
    OVERLOADED = "overloaded"
    SERVER = "server"
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of a provider's error table: the fault an error means when every given field
    matches (``status`` exactly, ``type``/``code`` exactly, ``message`` a case-insensitive
    regular expression searched in the upstream's text). A row with no fields never matches."""

    fault: Fault
    status: int | None = None
    type: str | None = None
    code: str | None = None
    message: str | None = None

    def matches(self, status: int, kind: str, code: str, text: str) -> bool:
        if self.status is None and self.type is None and self.code is None and not self.message:
            return False
        return (
            (self.status is None or self.status == status)
            and (self.type is None or self.type == kind)
            and (self.code is None or self.code == code)
            and (self.message is None or re.search(self.message, text, re.IGNORECASE) is not None)
        )


def classify(
    table: Sequence[Rule], status: int, *, kind: str = "", code: str = "", text: str = ""
) -> Fault:
    """The fault of the first row of ``table`` that matches, else the one ``status`` stands
    for (:func:`fault_of_status`). ``kind`` is the upstream's error type, ``code`` its error
    code, ``text`` its message (unsanitised is fine: it is only matched, never shown)."""
    for rule in table:
        if rule.matches(status, kind, code, text):
            return rule.fault
    return fault_of_status(status)


def fault_of_status(status: int) -> Fault:
    """The fault an HTTP status means when the body says nothing more precise.

    ===========  ====================================================================
    400 413 422  INVALID_REQUEST (the caller can fix it)
    401          AUTH: Switchboard's credentials were refused
    402          QUOTA (Payment Required: the account is out of credit)
    403          PERMISSION: the key may not use this model or endpoint
    404          MODEL_NOT_FOUND: the target's model or URL is wrong
    429          RATE_LIMIT
    529          OVERLOADED (Anthropic's "overloaded")
    408 409 5xx  SERVER
    other 4xx    MISCONFIGURED
    ===========  ====================================================================
    """
    if status in (400, 413, 422):
        return Fault.INVALID_REQUEST
    fixed = {
        401: Fault.AUTH,
        402: Fault.QUOTA,
        403: Fault.PERMISSION,
        404: Fault.MODEL_NOT_FOUND,
        429: Fault.RATE_LIMIT,
        529: Fault.OVERLOADED,
    }
    if status in fixed:
        return fixed[status]
    if status in (408, 409) or status >= 500:
        return Fault.SERVER
    return Fault.MISCONFIGURED


def upstream_error(
    fault: Fault,
    target: TargetSpec,
    *,
    seen: str,
    message: str = "",
    retry_after: float | None = None,
) -> SwitchboardError:
    """The error a caller gets for an upstream ``fault`` of ``target``. ``seen`` says how it
    arrived (``HTTP 400``, ``overloaded_error mid-stream``); ``message`` is the upstream's
    own text, already sanitised.

    ===============  ==================  =============================  ======  =======
    fault            status              reason                         retry   breaker
    ===============  ==================  =============================  ======  =======
    INVALID_REQUEST  INVALID_ARGUMENT    UPSTREAM_INVALID_REQUEST       no      no
    CONTEXT_WINDOW   INVALID_ARGUMENT    CONTEXT_WINDOW_EXCEEDED        no      no
    CONTENT_POLICY   INVALID_ARGUMENT    UPSTREAM_CONTENT_POLICY        no      no
    AUTH             INTERNAL            UPSTREAM_AUTH_FAILED           no      yes
    PERMISSION       INTERNAL            UPSTREAM_PERMISSION_DENIED     no      yes
    MODEL_NOT_FOUND  FAILED_PRECONDITION UPSTREAM_MODEL_NOT_FOUND       no      yes
    QUOTA            RESOURCE_EXHAUSTED  UPSTREAM_QUOTA_EXHAUSTED       no      yes
    RATE_LIMIT       UNAVAILABLE         UPSTREAM_RATE_LIMITED          yes     yes
    OVERLOADED       UNAVAILABLE         UPSTREAM_OVERLOADED            yes     yes
    SERVER           UNAVAILABLE         UPSTREAM_UNAVAILABLE           yes     yes
    MISCONFIGURED    FAILED_PRECONDITION UPSTREAM_MISCONFIGURED         no      yes
    ===============  ==================  =============================  ======  =======

    An upstream fault that is not retryable but counts against the breaker (credentials,
    model, quota) makes the router fall back at once; QUOTA carries ``google.rpc.QuotaFailure``
    with subject ``target:<name>`` and no RetryInfo (an operator must act). Every error
    carries ``target`` in its metadata.
    """
    error = _fault_error(fault, target, seen=seen, message=message, retry_after=retry_after)
    return error.about(target=target.name)


def _fault_error(
    fault: Fault, target: TargetSpec, *, seen: str, message: str, retry_after: float | None
) -> SwitchboardError:
    name = target.name
    said = f": {message}" if message else ""
    match fault:
        case Fault.QUOTA:
            return ResourceExhausted(
                f"target {name!r}: the upstream account is out of credit, or its quota or spend "
                f"limit is exhausted ({seen}); an operator must act{said}",
                violations=[QuotaViolation(f"target:{name}", QUOTA_DESCRIPTION)],
                reason=Reason.UPSTREAM_QUOTA_EXHAUSTED,
            ).overriding(counts_against_breaker=True)
        case Fault.CONTEXT_WINDOW:
            return InvalidArgument(
                f"target {name!r}: the request does not fit model {target.model!r}'s context "
                f"window ({seen}); shorten it or route to a model with a larger window{said}",
                reason=Reason.CONTEXT_WINDOW_EXCEEDED,
            )
        case Fault.CONTENT_POLICY:
            return InvalidArgument(
                f"target {name!r}: the upstream's content policy refused the request or its "
                f"answer ({seen}){said}",
                reason=Reason.UPSTREAM_CONTENT_POLICY,
            )
        case Fault.INVALID_REQUEST:
            return InvalidArgument(
                f"target {name!r}: the upstream rejected the request{said}",
                reason=Reason.UPSTREAM_INVALID_REQUEST,
            )
        case Fault.AUTH:
            return Internal(
                f"upstream rejected Switchboard's credentials for target {name!r} ({seen}); "
                "an operator must check the target's api_key. The request itself was not at "
                "fault.",
                reason=Reason.UPSTREAM_AUTH_FAILED,
            ).overriding(counts_against_breaker=True)
        case Fault.PERMISSION:
            return Internal(
                f"upstream denied Switchboard's credentials for target {name!r} access to model "
                f"{target.model!r} ({seen}); an operator must check the target's api_key and "
                f"model. The request itself was not at fault{said}",
                reason=Reason.UPSTREAM_PERMISSION_DENIED,
            ).overriding(counts_against_breaker=True)
        case Fault.MODEL_NOT_FOUND:
            return FailedPrecondition(
                f"target {name!r}: the upstream does not know model {target.model!r} "
                f"({seen}); an operator must fix the target's model or base_url{said}",
                reason=Reason.UPSTREAM_MODEL_NOT_FOUND,
            ).overriding(counts_against_breaker=True)
        case Fault.RATE_LIMIT:
            return Unavailable(
                f"target {name!r}: the upstream is rate limiting Switchboard ({seen}){said}",
                retry_after_s=retry_after,
                reason=Reason.UPSTREAM_RATE_LIMITED,
            )
        case Fault.OVERLOADED:
            return Unavailable(
                f"target {name!r}: the upstream is overloaded ({seen}){said}",
                retry_after_s=retry_after,
                reason=Reason.UPSTREAM_OVERLOADED,
            )
        case Fault.SERVER:
            return Unavailable(
                f"target {name!r}: the upstream failed ({seen}){said}",
                retry_after_s=retry_after,
                reason=Reason.UPSTREAM_UNAVAILABLE,
            )
    return FailedPrecondition(
        f"target {name!r}: the upstream answered {seen}; an operator must check the "
        f"target's configuration{said}",
        reason=Reason.UPSTREAM_MISCONFIGURED,
    ).overriding(counts_against_breaker=True)


def by_status(
    status: int,
    target: TargetSpec,
    *,
    message: str = "",
    retry_after: float | None = None,
    quota: bool = False,
    stream_error: str = "",
) -> SwitchboardError:
    """The error for an upstream HTTP ``status`` whose body says nothing more precise
    (:func:`fault_of_status`, then :func:`upstream_error`); ``quota`` says the upstream named
    an exhausted quota or spend limit; ``stream_error`` names the error type of an error
    event inside a 200 stream, whose ``status`` is the one that type stands for."""
    seen = f"{stream_error} mid-stream" if stream_error else f"HTTP {status}"
    fault = Fault.QUOTA if quota else fault_of_status(status)
    return upstream_error(fault, target, seen=seen, message=message, retry_after=retry_after)


def timed_out(target: TargetSpec) -> DeadlineExceeded:
    """The upstream (its SDK or transport) timed out."""
    return DeadlineExceeded(
        f"target {target.name!r}: the upstream timed out", reason=Reason.UPSTREAM_TIMEOUT
    ).about(target=target.name)


def connection_failed(target: TargetSpec) -> Unavailable:
    """The connection failed, or was lost before the answer finished."""
    return Unavailable(
        f"target {target.name!r}: the connection to the upstream failed or was lost "
        "before the answer finished",
        reason=Reason.UPSTREAM_CONNECTION_FAILED,
    ).about(target=target.name)


def malformed(target: TargetSpec, what: str = "a malformed response") -> Unavailable:
    """The upstream sent something that is not its wire format."""
    return Unavailable(
        f"target {target.name!r}: the upstream sent {what}",
        reason=Reason.UPSTREAM_MALFORMED_RESPONSE,
    ).about(target=target.name)
