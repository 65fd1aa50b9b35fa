"""The ``openai`` and ``openai_compatible`` providers: Chat Completions through the official
``openai`` SDK (async client, on httpx2).

One ``AsyncOpenAI`` client — one connection pool — per target, built here once and reused by
every call. The SDK's retries are off (``max_retries=0``): Switchboard owns retries. Every
call streams (``stream_options.include_usage`` so the stream ends with usage, estimated when a
server ignores it); a unary call is the stream folded by the runner. SDK exceptions are
mapped in :func:`map_error` and never leave this module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx2
import openai

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import SwitchboardError, Unavailable
from service.providers import openai_errors
from service.providers.base import ModelCall, TargetSpec
from service.providers.openai_wire import ChunkReader, build_request
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

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"
"""Sent as the bearer token to an ``openai_compatible`` server configured without a key."""
DEFAULT_TIMEOUT_S = 600.0
"""The client's own timeout; every call passes a tighter one from its deadline."""


class OpenAIChatProvider:
    """A Chat Completions target. Safe to share between concurrent calls."""

    def __init__(self, target: TargetSpec) -> None:
        self._target = target
        self._compatible = target.provider == "openai_compatible"
        self._include_usage = bool(target.options.get("include_usage", True))
        key = target.api_key.reveal() if target.api_key is not None else NO_KEY
        organization: str | None = target.options.get("organization")
        project: str | None = target.options.get("project")
        self.client = openai.AsyncOpenAI(
            api_key=key,
            base_url=target.base_url or OPENAI_BASE_URL,
            organization=organization,
            project=project,
            max_retries=0,
            timeout=target.timeout_s or DEFAULT_TIMEOUT_S,
        )
        # The SDK fills unset ones from OPENAI_ORG_ID / OPENAI_PROJECT_ID; a target is exactly
        # what its config says, so undo that (None means "header not sent").
        self.client.organization = organization
        self.client.project = project

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
        limit = AttemptLimit.of(deadline, self._target.timeout_s)
        try:
            chunks = await limit.run(
                self.client.chat.completions.create(
                    **request, stream=True, timeout=max(limit.remaining(), 0.001)
                ),
                target,
            )
            _watch_done(chunks, reader)
            async with chunks:  # closes the response on every exit: end, error, aclose, cancel
                while True:
                    try:
                        chunk = await limit.next(chunks, target)
                    except StopAsyncIteration:
                        break
                    for event in reader.feed(chunk):
                        yield event
        except (openai.OpenAIError, httpx2.HTTPError, json.JSONDecodeError) as exc:
            raise map_error(exc, self._target) from exc
        finally:
            limit.close()
        for event in reader.finish():
            yield event

    async def aclose(self) -> None:
        await self.client.close()


class _DoneWatch:
    """The SDK stream's SSE decoder, noting ``data: [DONE]`` on its way through.

    ``AsyncStream`` stops iterating at ``[DONE]`` exactly as it does at a body that simply
    ends, so only its decoder sees the difference between a whole stream and a truncated one.
    """

    def __init__(self, decoder: Any, reader: ChunkReader) -> None:
        self._decoder = decoder
        self._reader = reader

    async def aiter_bytes(self, iterator: AsyncIterator[bytes]) -> AsyncIterator[Any]:
        async for sse in self._decoder.aiter_bytes(iterator):
            if sse.data.startswith("[DONE]"):
                self._reader.done()
            yield sse


def _watch_done(chunks: Any, reader: ChunkReader) -> None:
    """Routes the stream's server-sent events through :class:`_DoneWatch` (before the first
    read: ``AsyncStream`` takes its decoder when iteration starts). Pinned by the truncation
    tests against the real SDK: a stream that lost its ``[DONE]`` must stay UNAVAILABLE."""
    chunks._decoder = _DoneWatch(chunks._decoder, reader)


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
    match exc:
        case openai.APITimeoutError() | httpx2.TimeoutException():
            return timed_out(target)
        case openai.APIConnectionError() | httpx2.TransportError():
            return connection_failed(target)
        case openai.APIStatusError():
            status, seen = exc.status_code, f"HTTP {exc.status_code}"
            retry_after = retry_after_s(exc.response.headers)
        case openai.APIResponseValidationError() | json.JSONDecodeError():
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
