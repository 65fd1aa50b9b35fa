"""The ``anthropic`` provider: the Messages API, the requests built by the official
``anthropic`` SDK and sent by aiohttp (:mod:`service.providers.sending`).

One ``AsyncAnthropic`` client per target, built here once, and one connection pool, opened on
the target's first request; both reused by every call. The SDK's retries are off
(``max_retries=0``): Switchboard owns retries. Every call streams; a unary call is the stream
folded by the runner. Upstream failures are mapped in :func:`map_error` and never leave this
module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable

import anthropic
import httpx2
import msgspec

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import DeadlineExceeded, FailedPrecondition, SwitchboardError, Unavailable
from service.providers import anthropic_errors, anthropic_events
from service.providers.anthropic_wire import EventReader, build_request
from service.providers.base import ModelCall, TargetSpec
from service.providers.coalesce import Gatherer
from service.providers.sending import Sender
from service.providers.sse import ServerEvent, SSEDecoder
from service.providers.upstream import (
    TRANSPORT_ERRORS,
    AttemptLimit,
    classify,
    connection_failed,
    malformed,
    retry_after_s,
    sanitize,
    timed_out,
    transport_fault,
    upstream_error,
)
from service.watchdog import Alarms

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
DEFAULT_TIMEOUT_S = 600.0
"""The client's own timeout; every call passes a tighter one from its deadline."""


_FAILURES: tuple[type[Exception], ...] = (
    anthropic.AnthropicError,
    *TRANSPORT_ERRORS,
    msgspec.DecodeError,
)
"""What a call to the upstream can raise that :func:`map_error` turns into a Switchboard error."""


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
        self._alarms = Alarms()  # one loop timer for the limits of all its attempts
        self._default_max_tokens = int(target.options.get("max_tokens", DEFAULT_MAX_TOKENS))
        self._sender = Sender(self._client_with, "/v1/messages")

    @property
    def client(self) -> anthropic.AsyncAnthropic:
        """The target's SDK client (it builds the requests: :mod:`service.providers.sending`)."""
        client = self._sender.client
        assert isinstance(client, anthropic.AsyncAnthropic)  # the one _client_with made
        return client

    def _client_with(self, http: httpx2.AsyncClient) -> anthropic.AsyncAnthropic:
        """The target's SDK client, building its requests through ``http``."""
        target = self._target
        assert target.api_key is not None  # checked in __init__
        return anthropic.AsyncAnthropic(
            api_key=target.api_key.reveal(),
            base_url=target.base_url or ANTHROPIC_BASE_URL,
            max_retries=0,
            timeout=target.timeout_s or DEFAULT_TIMEOUT_S,
            http_client=http,
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
        limit = AttemptLimit.of(deadline, self._target.timeout_s, self._alarms)
        extra = request.pop("extra_body", None) or {}
        try:
            reply = await limit.run(
                self._sender.open({**request, **extra, "stream": True}, limit.client_timeout_s()),
                target,
            )
            try:
                decoder = SSEDecoder()
                body = reply.chunks()

                def parse(sse: ServerEvent) -> Iterable[ProviderEvent]:
                    if sse.event in _SKIPPED_EVENTS:
                        return ()
                    if sse.event == "error":
                        raise _stream_error(sse.data, reply.described())
                    return reader.feed(anthropic_events.decode(sse.data))

                batches = Gatherer(parse).batches
                while True:
                    try:
                        data = await limit.next(body, target)
                    except StopAsyncIteration:
                        break
                    for events, failure in batches(decoder.feed(data)):
                        for out in events:
                            yield out
                        if failure is not None:
                            raise failure
            finally:
                await reply.aclose()  # on every exit: end, error, aclose, cancel
        except _FAILURES as exc:
            raise map_error(exc, self._target) from exc
        finally:
            limit.close()
        for out in reader.finish():
            yield out

    async def aclose(self) -> None:
        await self._sender.aclose()


_SKIPPED_EVENTS = frozenset({"", "ping"})
"""Events the SDK's own stream skips: unnamed ones and keep-alive pings."""


def _stream_error(data: bytes, response: httpx2.Response) -> anthropic.APIStatusError:
    """An ``error`` event as the SDK's own stream raises it: an ``APIStatusError`` carrying the
    event's body, with the stream's status (200), which :func:`map_error` reads."""
    try:
        body: object = json.loads(data)
        message = f"{body}"
    except (ValueError, RecursionError):  # RecursionError: deep nesting
        body = data.decode("utf-8", "replace")
        message = str(body) or f"Error code: {response.status_code}"
    return anthropic.APIStatusError(message, response=response, body=body)


def map_error(exc: Exception, target: TargetSpec) -> SwitchboardError:
    """The Switchboard error for an ``anthropic`` SDK (or httpx2 transport) exception.

    Timeouts → DeadlineExceeded; connection failures and drops → Unavailable; an HTTP error,
    or an ``error`` event inside a 200 stream, by what it means:
    :data:`anthropic_errors.TABLE` over its status, type, ``error_code`` and message, then
    :func:`service.providers.upstream.upstream_error` (so "Your credit balance is too low", a
    400, is a quota error, and "prompt is too long" a context-window error); malformed data
    → Unavailable. Messages quote the upstream's text sanitised.
    """
    transport = transport_fault(exc)
    if transport is DeadlineExceeded:
        return timed_out(target)
    if transport is Unavailable:
        return connection_failed(target)
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
        case (
            anthropic.APIResponseValidationError() | json.JSONDecodeError() | msgspec.DecodeError()
        ):
            return malformed(target)
    return Unavailable(
        f"target {target.name!r}: the upstream call failed ({type(exc).__name__})"
    ).about(target=target.name)
