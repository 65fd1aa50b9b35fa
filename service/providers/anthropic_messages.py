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
from service.errors import FailedPrecondition, SwitchboardError, Unavailable
from service.providers import anthropic_errors
from service.providers.anthropic_wire import EventReader, build_request
from service.providers.base import ModelCall, TargetSpec
from service.providers.upstream import (
    AttemptLimit,
    classify,
    connection_failed,
    malformed,
    retry_after_s,
    sanitize,
    timed_out,
    upstream_error,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
DEFAULT_TIMEOUT_S = 600.0
"""The client's own timeout; every call passes a tighter one from its deadline."""


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
        )

    async def stream(
        self, call: ModelCall, deadline: Deadline
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Stream ``call`` from the target; see :class:`service.providers.base.Provider`.

        Raises ``InvalidArgument`` before any upstream call for a request the Messages API
        cannot serve (a JSON schema it cannot take). Honours the earlier of ``deadline`` and the
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
        reader = EventReader(target, call)
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
        finally:
            limit.close()
        for out in reader.finish():
            yield out

    async def aclose(self) -> None:
        await self.client.close()


def map_error(exc: Exception, target: TargetSpec) -> SwitchboardError:
    """The Switchboard error for an ``anthropic`` SDK (or httpx2 transport) exception.

    Timeouts → DeadlineExceeded; connection failures and drops → Unavailable; an HTTP error,
    or an ``error`` event inside a 200 stream, by what it means:
    :data:`anthropic_errors.TABLE` over its status, type, ``error_code`` and message, then
    :func:`service.providers.upstream.upstream_error` (so "Your credit balance is too low", a
    400, is a quota error, and "prompt is too long" a context-window error); malformed data
    → Unavailable. Messages quote the upstream's text sanitised.
    """
    match exc:
        case anthropic.APITimeoutError() | httpx2.TimeoutException():
            return timed_out(target)
        case anthropic.APIConnectionError() | httpx2.TransportError():
            return connection_failed(target)
        case anthropic.APIStatusError():
            status, seen = exc.status_code, f"HTTP {exc.status_code}"
            if status < 400:  # an ``error`` event in the middle of a 200 stream
                kind = exc.type or "error"
                status = anthropic_errors.STREAM_ERROR_STATUS.get(kind, 500)
                seen = f"{kind} mid-stream"
            text = exc.api_message or ""
            fault = classify(
                anthropic_errors.TABLE,
                status,
                kind=exc.type or "",
                code=exc.error_code or "",
                text=text,
            )
            return upstream_error(
                fault,
                target,
                seen=seen,
                message=sanitize(text, target.api_key),
                retry_after=retry_after_s(exc.response.headers),
            )
        case anthropic.APIResponseValidationError() | json.JSONDecodeError():
            return malformed(target)
    return Unavailable(
        f"target {target.name!r}: the upstream call failed ({type(exc).__name__})"
    ).about(target=target.name)
