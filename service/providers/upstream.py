"""What the SDK-backed providers share: an attempt's time limit, Retry-After, sanitised text.

No SDK is imported here; each provider module maps its own SDK's exceptions (the HTTP
transport's, aiohttp's, are read here: both SDKs share it).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp

from service.deadline import Deadline
from service.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    QuotaViolation,
    ResourceExhausted,
    SwitchboardError,
    Unavailable,
)
from service.providers.base import TargetSpec
from service.secrets import Secret

T = TypeVar("T")

MAX_UPSTREAM_MESSAGE_CHARS = 300
"""Upstream error text quoted to callers is cut to this length."""

# Key-shaped tokens (OpenAI "sk-…", Anthropic "sk-ant-…", bearer tokens) never reach a caller,
# even when an upstream quotes one back in an error message.
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk|key)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)
_BEARER = re.compile(r"(?i)\b(bearer|x-api-key:?|api[_ -]?key:?)\s+\S+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class AttemptLimit:
    """The time one upstream attempt may take: the call's deadline, or the target's
    ``timeout_s`` from now when that is sooner. ``why`` names which, for error messages."""

    deadline: Deadline
    why: str

    @classmethod
    def of(cls, deadline: Deadline, timeout_s: float | None) -> AttemptLimit:
        if timeout_s is not None and time.monotonic() + timeout_s < deadline.at:
            return cls(Deadline.after(timeout_s), f"the target's timeout_s of {timeout_s:g}s")
        return cls(deadline, "the call's deadline")

    def remaining(self) -> float:
        return self.deadline.remaining()

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
        return await self.run(anext(iterator), target)

    def exceeded(self, target: str) -> DeadlineExceeded:
        return DeadlineExceeded(f"target {target!r} did not answer within {self.why}")


def transport_fault(exc: BaseException) -> type[DeadlineExceeded] | type[Unavailable] | None:
    """What an HTTP transport failure under ``exc`` really was, read from its causes:
    ``DeadlineExceeded`` for a timeout, ``Unavailable`` for a connection refused, reset or
    dropped mid-body; ``None`` when no aiohttp error caused it.

    The SDKs' aiohttp transport (``DefaultAioHttpClient``) re-raises every aiohttp connection
    error as ``httpx2.ConnectTimeout`` (its table maps ``ClientConnectionError`` to it), so a
    refused connection or a stream cut short would otherwise read as a timeout.
    """
    cause = exc.__cause__
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


def by_status(
    status: int,
    target: TargetSpec,
    *,
    message: str = "",
    retry_after: float | None = None,
    quota: bool = False,
    stream_error: str = "",
) -> SwitchboardError:
    """The error for an upstream HTTP ``status`` (or the status an in-stream error event
    stands for), shared by the SDK-backed providers. ``message`` is the upstream's own text,
    already sanitised; ``quota`` says the upstream named an exhausted quota or spend limit;
    ``stream_error`` names the error type of an error event inside a 200 stream, whose
    ``status`` is the one that type stands for.

    ===========  ===================================================================
    400 413 422  InvalidArgument with the upstream's message (the caller can fix it)
    401 403      Internal, operator-facing: Switchboard's credentials were refused
    402, quota   ResourceExhausted, not retryable, no RetryInfo (an operator must act)
    404          FailedPrecondition, operator-facing: the target's model or URL is wrong
    429          Unavailable with ``retry_after`` (RetryInfo), retryable
    408 409 5xx  Unavailable (529 is Anthropic's "overloaded"), retryable
    other 4xx    FailedPrecondition, operator-facing
    ===========  ===================================================================

    Upstream faults (everything but the caller's own 400s) count against the target's breaker.
    """
    name = target.name
    said = f": {message}" if message else ""
    seen = f"{stream_error} mid-stream" if stream_error else f"HTTP {status}"
    if quota or status == 402:
        return ResourceExhausted(
            f"target {name!r}: the upstream account's quota or spend limit is exhausted "
            f"({seen}); an operator must raise it{said}",
            violations=[QuotaViolation(f"target:{name}", "upstream quota or spend limit")],
        ).overriding(counts_against_breaker=True)
    if status in (400, 413, 422):
        return InvalidArgument(f"target {name!r}: the upstream rejected the request{said}")
    if status in (401, 403):
        return Internal(
            f"upstream rejected Switchboard's credentials for target {name!r} ({seen}); "
            "an operator must check the target's api_key. The request itself was not at fault."
        ).overriding(counts_against_breaker=True)
    if status == 404:
        return FailedPrecondition(
            f"target {name!r}: the upstream does not know model {target.model!r} "
            f"({seen}); an operator must fix the target's model or base_url{said}"
        ).overriding(counts_against_breaker=True)
    if status == 429:
        return Unavailable(
            f"target {name!r}: the upstream is rate limiting Switchboard ({seen}){said}",
            retry_after_s=retry_after,
        )
    if status in (408, 409) or status >= 500:
        return Unavailable(
            f"target {name!r}: the upstream failed ({seen}){said}",
            retry_after_s=retry_after,
        )
    return FailedPrecondition(
        f"target {name!r}: the upstream answered {seen}; an operator must check the "
        f"target's configuration{said}"
    ).overriding(counts_against_breaker=True)
