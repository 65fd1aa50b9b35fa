"""The ``anthropic`` provider: the Messages API through the official ``anthropic`` SDK
(async client, on httpx2).

One ``AsyncAnthropic`` client — one connection pool — per target, built here once and reused
by every call. The SDK's retries are off (``max_retries=0``): Switchboard owns retries. Every
call streams; a unary call is the stream folded by the runner. SDK exceptions are mapped in
:func:`map_error` and never leave this module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import anthropic
import httpx2

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import DeadlineExceeded, FailedPrecondition, SwitchboardError, Unavailable
from service.providers.anthropic_wire import EventReader, build_request
from service.providers.base import ModelCall, TargetSpec
from service.providers.upstream import (
    AttemptLimit,
    by_status,
    retry_after_s,
    sanitize,
    transport_fault,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
DEFAULT_TIMEOUT_S = 600.0
"""The client's own timeout; every call passes a tighter one from its deadline."""

_QUOTA_CODES = frozenset(
    {
        "contract_spend_limit_reached",
        "enforced_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)
# An ``error`` event inside a 200 stream carries a type, not a status: the status it stands for.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicMessagesProvider:
    """A Messages API target. Safe to share between concurrent calls."""

    def __init__(self, target: TargetSpec) -> None:
        """Builds the target's one client.

        Raises:
            FailedPrecondition: the target has no key (config loading rejects that first).
        """
        if target.api_key is None:
            raise FailedPrecondition(f"target {target.name!r}: provider anthropic needs an api_key")
        self._target = target
        self._default_max_tokens = int(target.options.get("max_tokens", DEFAULT_MAX_TOKENS))
        self.client = anthropic.AsyncAnthropic(
            api_key=target.api_key.reveal(),
            base_url=target.base_url or ANTHROPIC_BASE_URL,
            max_retries=0,
            timeout=target.timeout_s or DEFAULT_TIMEOUT_S,
            http_client=anthropic.DefaultAioHttpClient(
                timeout=target.timeout_s or DEFAULT_TIMEOUT_S
            ),
        )

    async def stream(
        self, call: ModelCall, deadline: Deadline
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Stream ``call`` from the target; see :class:`service.providers.base.Provider`.

        Raises ``InvalidArgument`` before any upstream call for a request the Messages API
        cannot serve (a JSON response format). Honours the earlier of ``deadline`` and the
        target's ``timeout_s``. Raises the errors :func:`map_error` gives, and
        ``Unavailable`` when the stream ends without ``message_stop``. Closing the generator
        closes the HTTP response.
        """
        target = self._target.name
        request = build_request(
            call,
            model=self._target.model,
            target=target,
            default_max_tokens=self._default_max_tokens,
        )
        reader = EventReader(target)
        limit = AttemptLimit.of(deadline, self._target.timeout_s)
        try:
            events = await limit.run(
                self.client.messages.create(
                    **request, stream=True, timeout=max(limit.remaining(), 0.001)
                ),
                target,
            )
            async with events:  # closes the response on every exit: end, error, aclose, cancel
                while True:
                    try:
                        event = await limit.next(events, target)
                    except StopAsyncIteration:
                        break
                    for out in reader.feed(event):
                        yield out
        except (anthropic.AnthropicError, httpx2.HTTPError, json.JSONDecodeError) as exc:
            raise map_error(exc, self._target) from exc
        for out in reader.finish():
            yield out

    async def aclose(self) -> None:
        await self.client.close()


def map_error(exc: Exception, target: TargetSpec) -> SwitchboardError:
    """The Switchboard error for an ``anthropic`` SDK (or httpx2 transport) exception.

    Timeouts → DeadlineExceeded; connection failures and drops → Unavailable; HTTP statuses by
    :func:`service.providers.upstream.by_status` (529 "overloaded" → Unavailable), where a 429
    naming a spend limit (``…_spend_limit_reached``) or a ``billing_error`` is a quota error
    (not retryable) rather than a rate limit; an ``error`` event inside a 200 stream by its
    error type; malformed data → Unavailable. Messages quote the upstream's text sanitised.
    """
    name = target.name
    fault = transport_fault(exc)
    if fault is DeadlineExceeded:
        return DeadlineExceeded(f"target {name!r}: the upstream timed out")
    if fault is Unavailable:
        return Unavailable(
            f"target {name!r}: the connection to the upstream failed or was lost "
            "before the answer finished"
        )
    match exc:
        case anthropic.APITimeoutError() | httpx2.TimeoutException():
            return DeadlineExceeded(f"target {name!r}: the upstream timed out")
        case anthropic.APIConnectionError() | httpx2.TransportError():
            return Unavailable(
                f"target {name!r}: the connection to the upstream failed or was lost "
                "before the answer finished"
            )
        case anthropic.APIStatusError():
            status = exc.status_code
            stream_error = ""
            if status < 400:  # an ``error`` event in the middle of a 200 stream
                stream_error = exc.type or "error"
                status = _STREAM_ERROR_STATUS.get(stream_error, 500)
            return by_status(
                status,
                target,
                message=sanitize(exc.api_message or "", target.api_key),
                retry_after=retry_after_s(exc.response.headers),
                quota=exc.error_code in _QUOTA_CODES or exc.type == "billing_error",
                stream_error=stream_error,
            )
        case anthropic.APIResponseValidationError() | json.JSONDecodeError():
            return Unavailable(f"target {name!r}: the upstream sent a malformed response")
    return Unavailable(f"target {name!r}: the upstream call failed ({type(exc).__name__})")
