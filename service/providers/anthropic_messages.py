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
from typing import Any

import anthropic
import httpx2
import msgspec

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import DeadlineExceeded, FailedPrecondition, SwitchboardError, Unavailable
from service.providers import anthropic_events
from service.providers.anthropic_wire import EventReader, build_request
from service.providers.base import ModelCall, TargetSpec
from service.providers.sse import SSEDecoder
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
        extra = request.pop("extra_body", None) or {}
        try:
            response = await limit.run(
                self._post({**request, **extra, "stream": True}, limit), target
            )
            try:
                decoder = SSEDecoder()
                body = response.aiter_bytes()
                while True:
                    try:
                        data = await limit.next(body, target)
                    except StopAsyncIteration:
                        break
                    for sse in decoder.feed(data):
                        if sse.event in _SKIPPED_EVENTS:
                            continue
                        if sse.event == "error":
                            raise _stream_error(sse.data, response)
                        for out in reader.feed(anthropic_events.decode(sse.data)):
                            yield out
            finally:
                await response.aclose()  # on every exit: end, error, aclose, cancel
        except (anthropic.AnthropicError, httpx2.HTTPError, msgspec.DecodeError) as exc:
            raise map_error(exc, self._target) from exc
        for out in reader.finish():
            yield out

    async def _post(self, body: dict[str, Any], limit: AttemptLimit) -> httpx2.Response:
        """POST ``body`` to the Messages endpoint through the SDK's client (its base URL, auth,
        version header and status errors), returning the raw response with its body unread.
        The SDK's typed ``create`` would turn each streamed event into a pydantic model: most
        of the provider path's CPU (README, Benchmarks).

        Raises: ``anthropic.APIStatusError`` for an error status, the SDK's connection errors.
        """
        streamed: bool = bool(body.get("stream"))
        return await self.client.post(
            "/v1/messages",
            cast_to=httpx2.Response,
            body=body,
            options={"timeout": max(limit.remaining(), 0.001)},
            stream=streamed,
        )

    async def aclose(self) -> None:
        await self.client.close()


_SKIPPED_EVENTS = frozenset({"", "ping"})
"""Events the SDK's own stream skips: unnamed ones and keep-alive pings."""


def _stream_error(data: bytes, response: httpx2.Response) -> anthropic.APIStatusError:
    """An ``error`` event as the SDK's own stream raises it: an ``APIStatusError`` carrying the
    event's body, with the stream's status (200), which :func:`map_error` reads."""
    try:
        body: object = json.loads(data)
        message = f"{body}"
    except ValueError:
        body = data.decode("utf-8", "replace")
        message = str(body) or f"Error code: {response.status_code}"
    return anthropic.APIStatusError(message, response=response, body=body)


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
        case (
            anthropic.APIResponseValidationError() | json.JSONDecodeError() | msgspec.DecodeError()
        ):
            return Unavailable(f"target {name!r}: the upstream sent a malformed response")
    return Unavailable(f"target {name!r}: the upstream call failed ({type(exc).__name__})")
