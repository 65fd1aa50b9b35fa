"""The ``openai`` and ``openai_compatible`` providers: Chat Completions through the official
``openai`` SDK (async client, on httpx2).

One ``AsyncOpenAI`` client — one connection pool — per target, built here once and reused by
every call. The SDK's retries are off (``max_retries=0``): Switchboard owns retries. Every
call streams (``stream_options.include_usage`` so the stream ends with usage); a unary call is
the stream folded by the runner. SDK exceptions are mapped in :func:`map_error` and never
leave this module.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import msgspec
import openai

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import DeadlineExceeded, SwitchboardError, Unavailable
from service.providers import openai_chunks
from service.providers.base import ModelCall, TargetSpec
from service.providers.openai_wire import ChunkReader, build_request
from service.providers.sse import SSEDecoder
from service.providers.upstream import (
    AttemptLimit,
    by_status,
    retry_after_s,
    sanitize,
    transport_fault,
)

OPENAI_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"
"""Sent as the bearer token to an ``openai_compatible`` server configured without a key."""
DEFAULT_TIMEOUT_S = 600.0
"""The client's own timeout; every call passes a tighter one from its deadline."""

_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})
# In-stream error objects carry a type, not a status: the status each type stands for.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "tokens": 429,
    "requests": 429,
}


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
            http_client=openai.DefaultAioHttpClient(timeout=target.timeout_s or DEFAULT_TIMEOUT_S),
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
        reader = ChunkReader(target, expect_usage=self._include_usage)
        limit = AttemptLimit.of(deadline, self._target.timeout_s)
        try:
            response = await limit.run(self._post({**request, "stream": True}, limit), target)
            try:
                decoder = SSEDecoder()
                body = response.aiter_bytes()
                done = False
                while True:
                    try:
                        data = await limit.next(body, target)
                    except StopAsyncIteration:
                        break
                    if done:
                        continue  # read to the end, so the connection is reused
                    for sse in decoder.feed(data):
                        if sse.data.startswith(b"[DONE]"):
                            done = True
                            break
                        for event in reader.feed(self._chunk(sse.data, response)):
                            yield event
            finally:
                await response.aclose()  # on every exit: end, error, aclose, cancel
        except (openai.OpenAIError, httpx2.HTTPError, msgspec.DecodeError) as exc:
            raise map_error(exc, self._target) from exc
        for event in reader.finish():
            yield event

    async def _post(self, body: dict[str, Any], limit: AttemptLimit) -> httpx2.Response:
        """POST ``body`` to the chat completions endpoint through the SDK's client (its base
        URL, auth, headers and status errors), returning the raw response with its body
        unread. The SDK's typed ``create`` would turn the body's every field through its
        TypedDict reflection and each streamed chunk into a pydantic model: most of the
        provider path's CPU (README, Benchmarks).

        Raises: ``openai.APIStatusError`` for an error status, the SDK's connection errors.
        """
        streamed: bool = bool(body.get("stream"))
        return await self.client.post(
            "/chat/completions",
            cast_to=httpx2.Response,
            body=body,
            options={"timeout": max(limit.remaining(), 0.001)},
            stream=streamed,
        )

    @staticmethod
    def _chunk(data: bytes, response: httpx2.Response) -> openai_chunks.Chunk:
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
                response.request,
                body=chunk.error,
            )
        return chunk

    async def aclose(self) -> None:
        await self.client.close()


def map_error(exc: Exception, target: TargetSpec) -> SwitchboardError:
    """The Switchboard error for an ``openai`` SDK (or httpx2 transport) exception.

    Timeouts → DeadlineExceeded; connection failures and drops → Unavailable; HTTP statuses by
    :func:`service.providers.upstream.by_status`, where a 429 whose code is
    ``insufficient_quota`` is a quota error (not retryable) rather than a rate limit; an error
    object inside a 200 stream by its type; malformed data → Unavailable. Messages quote the
    upstream's text sanitised (no keys, cut short).
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
        case openai.APITimeoutError() | httpx2.TimeoutException():
            return DeadlineExceeded(f"target {name!r}: the upstream timed out")
        case openai.APIConnectionError() | httpx2.TransportError():
            return Unavailable(
                f"target {name!r}: the connection to the upstream failed or was lost "
                "before the answer finished"
            )
        case openai.APIStatusError():
            return by_status(
                exc.status_code,
                target,
                message=_upstream_message(exc, target),
                retry_after=retry_after_s(exc.response.headers),
                quota=_is_quota(exc),
            )
        case openai.APIResponseValidationError() | json.JSONDecodeError() | msgspec.DecodeError():
            return Unavailable(f"target {name!r}: the upstream sent a malformed response")
        case openai.APIError():  # an error object in the middle of a 200 stream
            kind = exc.type or exc.code or "error"
            return by_status(
                _STREAM_ERROR_STATUS.get(kind, 500),
                target,
                message=_upstream_message(exc, target),
                quota=_is_quota(exc),
                stream_error=kind,
            )
    return Unavailable(f"target {name!r}: the upstream call failed ({type(exc).__name__})")


def _is_quota(exc: openai.APIError) -> bool:
    return exc.code in _QUOTA_CODES or exc.type in _QUOTA_CODES


def _upstream_message(exc: openai.APIError, target: TargetSpec) -> str:
    body: Any = exc.body
    text = body.get("message") if isinstance(body, dict) else None
    return sanitize(text if isinstance(text, str) else "", target.api_key)
