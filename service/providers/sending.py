"""How the SDK-backed providers send a request: the SDK's own client builds the first one,
and later ones reuse what it built.

Each call through the SDK's ``post`` rebuilds the same request from scratch: its options
model, the merged headers (auth, version, platform), the URL joined onto the base URL, the
JSON body through its own encoder, and an auth-retry wrapper around the send. On the
provider path that was about a quarter of the gateway's CPU per call and 0.24 ms of a call's
latency (docs/benchmarks.md). A target's URL and headers never change (its key, base URL
and options are fixed when the target is built), so :class:`Sender` sends the first request
through the SDK, keeps that request's URL and headers, and sends every later one through the
same HTTP client (the SDK's aiohttp transport, ``DefaultAioHttpClient``: same connections,
TLS, proxies and timeouts) with only the body and the read timeout new.

Error statuses are raised as the SDK raises them (its status-error factory, the one its
``post`` uses), so a provider maps one kind of exception whichever way the request went.
Transport failures are httpx2's, as they are under the SDK's wrappers (the providers'
``map_error`` reads both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import msgspec
import openai

_TIMEOUTS = ("x-stainless-read-timeout", "x-stainless-timeout")
"""Headers in which a Stainless SDK tells the upstream the request's timeout (seconds)."""
_PER_REQUEST = frozenset({"content-length", *_TIMEOUTS})
"""Headers the SDK computes per request; everything else it sent is the target's own."""

_encode = msgspec.json.Encoder().encode


class Sender:
    """POSTs JSON bodies to one endpoint of one target. ``client`` is the target's SDK client
    and ``http`` the HTTP client it was built with; ``path`` is relative to its base URL.
    Safe to share between concurrent calls."""

    __slots__ = ("_client", "_headers", "_http", "_path", "_status_error", "_timeouts", "_url")

    def __init__(
        self,
        client: openai.AsyncOpenAI | anthropic.AsyncAnthropic,
        http: httpx2.AsyncClient,
        path: str,
    ) -> None:
        self._client = client
        self._http = http
        self._path = path
        self._url: httpx2.URL | None = None
        self._headers: list[tuple[str, str]] = []
        self._timeouts: tuple[str, ...] = ()
        # Stainless SDKs (openai, anthropic) raise status errors through this one factory.
        self._status_error: Callable[[httpx2.Response], Exception] = (
            client._make_status_error_from_response
        )

    async def post(
        self, body: dict[str, Any], timeout_s: float, *, stream: bool
    ) -> httpx2.Response:
        """The response to POSTing ``body``, its body unread when ``stream`` (read when not),
        within ``timeout_s`` seconds for each of connect, write and read.

        Raises:
            openai.APIStatusError | anthropic.APIStatusError: an error status (4xx, 5xx), as
                the SDK raises it.
            httpx2.HTTPError | openai.APIError | anthropic.APIError: the transport failed.
        """
        if self._url is None:
            response = await self._client.post(
                self._path,
                cast_to=httpx2.Response,
                body=body,
                options={"timeout": timeout_s},
                stream=stream,
            )
            self._learn(response.request)
            return response
        headers = [*self._headers, *((name, str(timeout_s)) for name in self._timeouts)]
        # A Request made directly, not through ``build_request``: the learned headers already
        # hold the client's own (merging them again per request was half the sending cost).
        timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        request = httpx2.Request(
            "POST",
            self._url,
            content=_encode(body),
            headers=headers,
            extensions={"timeout": timeout},
        )
        response = await self._http.send(request, stream=stream)
        if response.is_error:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise self._status_error(response)
        return response

    def _learn(self, request: httpx2.Request) -> None:
        self._headers = [
            (name, value)
            for name, value in request.headers.items()
            if name.lower() not in _PER_REQUEST
        ]
        self._timeouts = tuple(name for name in _TIMEOUTS if name in request.headers)
        self._url = request.url
