"""The ``openai`` and ``openai_compatible`` providers: Chat Completions, the requests built
by the official ``openai`` SDK and sent by aiohttp (:mod:`service.providers.sending`).

One ``AsyncOpenAI`` client per target, built here once, and one connection pool, opened on the
target's first request; both reused by every call. The SDK's retries are off
(``max_retries=0``): Switchboard owns retries. A streamed call asks for
``stream_options.include_usage`` so the stream ends with usage (estimated when a server ignores
it); a call the caller takes whole asks for a non-streamed completion. Upstream failures are
mapped in :func:`map_error` and never leave this module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from typing import Any

import httpx2
import msgspec
import openai

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import DeadlineExceeded, SwitchboardError, Unavailable
from service.providers import openai_chunks, openai_errors
from service.providers.base import ModelCall, TargetSpec
from service.providers.coalesce import Gatherer
from service.providers.openai_wire import ChunkReader, build_request
from service.providers.sending import Reply, Sender
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

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"
"""Sent as the bearer token to an ``openai_compatible`` server configured without a key."""
DEFAULT_TIMEOUT_S = 600.0
"""The client's own timeout; every call passes a tighter one from its deadline."""


_FAILURES: tuple[type[Exception], ...] = (
    openai.OpenAIError,
    *TRANSPORT_ERRORS,
    msgspec.DecodeError,
)
"""What a call to the upstream can raise that :func:`map_error` turns into a Switchboard error."""


class OpenAIChatProvider:
    """A Chat Completions target. Safe to share between concurrent calls."""

    def __init__(self, target: TargetSpec) -> None:
        self._target = target
        self._alarms = Alarms()  # one loop timer for the limits of all its attempts
        self._compatible = target.provider == "openai_compatible"
        self._include_usage = bool(target.options.get("include_usage", True))
        self._sender = Sender(self._client_with, "/chat/completions")

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The target's SDK client (it builds the requests: :mod:`service.providers.sending`)."""
        client = self._sender.client
        assert isinstance(client, openai.AsyncOpenAI)  # the one _client_with made
        return client

    def _client_with(self, http: httpx2.AsyncClient) -> openai.AsyncOpenAI:
        """The target's SDK client, building its requests through ``http``."""
        target = self._target
        key = target.api_key.reveal() if target.api_key is not None else NO_KEY
        organization: str | None = target.options.get("organization")
        project: str | None = target.options.get("project")
        client = openai.AsyncOpenAI(
            api_key=key,
            base_url=target.base_url or OPENAI_BASE_URL,
            organization=organization,
            project=project,
            max_retries=0,
            timeout=target.timeout_s or DEFAULT_TIMEOUT_S,
            http_client=http,
        )
        # The SDK fills unset ones from OPENAI_ORG_ID / OPENAI_PROJECT_ID; a target is exactly
        # what its config says, so undo that (None means "header not sent").
        client.organization = organization
        client.project = project
        return client

    async def stream(
        self, call: ModelCall, deadline: Deadline
    ) -> AsyncGenerator[ProviderEvent, None]:
        """Stream ``call`` from the target; see :class:`service.providers.base.Provider`.

        Honours the earlier of ``deadline`` and the target's ``timeout_s``. Raises the errors
        :func:`map_error` gives, and ``Unavailable`` when the stream ends unfinished. Closing
        the generator closes the HTTP response.
        """
        target = self._target.name
        request = build_request(
            call,
            model=self._target.model,
            max_tokens_field="max_tokens" if self._compatible else "max_completion_tokens",
            include_usage=self._include_usage,
        )
        reader = ChunkReader(target, call)
        limit = AttemptLimit.of(deadline, self._target.timeout_s, self._alarms)
        if call.whole:
            for event in await self._whole(request, reader, limit):
                yield event
            return
        try:
            reply = await limit.run(
                self._sender.open({**request, "stream": True}, limit.client_timeout_s()), target
            )
            try:
                decoder = SSEDecoder()
                body = reply.chunks()
                done = False

                def parse(sse: ServerEvent) -> Iterable[ProviderEvent]:
                    nonlocal done
                    if done:
                        return ()  # the SDK's stream, too, reads nothing after [DONE]
                    if sse.data.startswith(b"[DONE]"):
                        reader.done()
                        done = True
                        return ()
                    return reader.feed(self._chunk(sse.data, reply))

                batches = Gatherer(parse).batches
                while True:
                    try:
                        data = await limit.next(body, target)
                    except StopAsyncIteration:
                        break
                    for events, failure in batches(decoder.feed(data)):
                        for event in events:
                            yield event
                        if failure is not None:
                            raise failure
            finally:
                await reply.aclose()  # on every exit: end, error, aclose, cancel
        except _FAILURES as exc:
            raise map_error(exc, self._target) from exc
        finally:
            limit.close()
        for event in reader.finish():
            yield event

    async def _whole(
        self, request: dict[str, Any], reader: ChunkReader, limit: AttemptLimit
    ) -> list[ProviderEvent]:
        """A non-streamed completion (the caller takes the answer whole): one request, one
        body decoded at once, the same events a stream of it would give, joined."""
        body = {k: v for k, v in request.items() if k != "stream_options"}
        try:
            try:
                content = await limit.run(
                    self._sender.read(body, limit.client_timeout_s()), self._target.name
                )
                completion = openai_chunks.decode_completion(content)
            finally:
                limit.close()
        except _FAILURES as exc:
            raise map_error(exc, self._target) from exc
        events = list(reader.feed(completion.as_chunk()))
        reader.done()
        return events + list(reader.finish())

    @staticmethod
    def _chunk(data: bytes, reply: Reply) -> openai_chunks.Chunk:
        """The chunk in one event's data.

        Raises:
            openai.APIError: the event is an error object (as the SDK's own stream raises).
            msgspec.DecodeError: the data is not a chunk.
        """
        chunk = openai_chunks.decode(data)
        if chunk.error is not None:
            message = chunk.error.get("message")
            raise openai.APIError(
                message if isinstance(message, str) and message else "An error in the stream",
                reply.described().request,
                body=chunk.error,
            )
        return chunk

    async def aclose(self) -> None:
        await self._sender.aclose()


def map_error(exc: Exception, target: TargetSpec) -> SwitchboardError:
    """The Switchboard error for an ``openai`` SDK (or httpx2 transport) exception.

    Timeouts → DeadlineExceeded; connection failures and drops → Unavailable; an HTTP error,
    or an error object inside a 200 stream, by what it means: :data:`openai_errors.TABLE`
    over its status, type, code and message, then
    :func:`service.providers.upstream.upstream_error` (so ``insufficient_quota`` is a quota
    error, not a rate limit, and ``context_length_exceeded`` a context-window error);
    malformed data → Unavailable. Messages quote the upstream's text sanitised (no keys,
    cut short).
    """
    transport = transport_fault(exc)
    if transport is DeadlineExceeded:
        return timed_out(target)
    if transport is Unavailable:
        return connection_failed(target)
    match exc:
        case openai.APITimeoutError() | httpx2.TimeoutException():
            return timed_out(target)
        case openai.APIConnectionError() | httpx2.TransportError():
            return connection_failed(target)
        case openai.APIStatusError():
            status, seen = exc.status_code, f"HTTP {exc.status_code}"
            retry_after = retry_after_s(exc.response.headers)
        case openai.APIResponseValidationError() | json.JSONDecodeError() | msgspec.DecodeError():
            return malformed(target)
        case openai.APIError():  # an error object in the middle of a 200 stream
            kind = exc.type or exc.code or "error"
            status = openai_errors.STREAM_ERROR_STATUS.get(kind, 500)
            seen, retry_after = f"{kind} mid-stream", None
        case _:
            return Unavailable(
                f"target {target.name!r}: the upstream call failed ({type(exc).__name__})"
            ).about(target=target.name)
    text = _upstream_text(exc)
    fault = classify(
        openai_errors.TABLE, status, kind=exc.type or "", code=exc.code or "", text=text
    )
    return upstream_error(
        fault,
        target,
        seen=seen,
        message=sanitize(text, target.api_key),
        retry_after=retry_after,
    )


def _upstream_text(exc: openai.APIError) -> str:
    """The upstream's own message: ``error.message`` of a JSON body, else the raw body."""
    body: Any = exc.body
    if isinstance(body, dict):
        text = body.get("message")
        return text if isinstance(text, str) else ""
    return body if isinstance(body, str) else ""
