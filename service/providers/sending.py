"""How the SDK-backed providers send a request: the target's SDK client builds it, aiohttp
sends it.

Each call through the SDK's ``post`` rebuilds the same request from scratch (its options
model, the merged headers: auth, version, platform; the URL joined onto the base URL; the
JSON body through its own encoder; an auth-retry wrapper around the send), and then httpx2
wraps its own request and response objects around the aiohttp ones that its transport (the
SDKs' ``DefaultAioHttpClient``) really sends and reads. Measured on the provider path, the SDK's
rebuilding was about a quarter of the gateway's CPU per call, and httpx2's layers another
eighth (docs/benchmarks.md).

A target's URL and headers never change (its key, base URL and options are fixed when the
target is built). So :class:`Sender` has the SDK build the target's first request, through an
httpx2 client whose transport (``httpx2.MockTransport``) hands each request straight back
unsent. It sends that request, and every later one with only the body and the timeouts new,
through an ``aiohttp.ClientSession`` of its own: one connection pool per target, set up as
the SDK's transport sets up its own (connection limits, keep-alive, TLS context, proxies from
the environment).

Error statuses are raised as the SDK raises them (its status-error factory, the one its
``post`` uses). Transport failures are aiohttp's (``aiohttp.ClientError``), which the
providers' ``map_error`` reads (:func:`service.providers.upstream.transport_fault`).
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anthropic
import httpx2
import msgspec
import openai

_TIMEOUTS = ("x-stainless-read-timeout", "x-stainless-timeout")
"""Headers in which a Stainless SDK tells the upstream the request's timeout (seconds)."""
_PER_REQUEST = frozenset({"content-length", "accept-encoding", *_TIMEOUTS})
"""Headers the SDK computes per request, and ``accept-encoding``, which aiohttp sets to the
encodings it can decode; everything else the SDK sent is the target's own."""
_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})
"""Headers that no longer describe a body aiohttp has read and decoded."""

_encode = msgspec.json.Encoder().encode
_UNBOUNDED = aiohttp.ClientTimeout()

SDKClient = openai.AsyncOpenAI | anthropic.AsyncAnthropic


class Reply:
    """A 2xx answer whose body is read as it arrives: aiohttp's response to the request
    ``request`` describes (made only for an error: an httpx2 request is not cheap)."""

    __slots__ = ("_request", "_response")

    def __init__(
        self, response: aiohttp.ClientResponse, request: Callable[[], httpx2.Request]
    ) -> None:
        self._response = response
        self._request = request

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive (each chunk what the socket had).

        Raises (when iterated): ``aiohttp.ClientError``: the connection failed or dropped.
        """
        return self._response.content.iter_any()

    def described(self) -> httpx2.Response:
        """The answer's status and headers, its request attached, as the SDKs' exceptions
        take them (for an error object in the middle of a 200 stream)."""
        return _described(self._response, self._request(), b"")

    async def aclose(self) -> None:
        """Releases the connection (aiohttp closes one whose body was not read to its end)."""
        self._response.release()


class Sender:
    """POSTs JSON bodies to one endpoint of one target, the SDK client ``client_with`` makes
    (given the httpx2 client it must use) building the requests; ``path`` is relative to its
    base URL. Safe to share between concurrent calls; :meth:`aclose` closes what it opened.
    """

    __slots__ = (
        "_headers",
        "_path",
        "_proxy",
        "_session",
        "_status_error",
        "_timeouts",
        "_url",
        "client",
    )

    def __init__(self, client_with: Callable[[httpx2.AsyncClient], SDKClient], path: str) -> None:
        # The SDK's client builds requests and never sends one: its transport answers each
        # with an empty 204 at once, and the request comes back on that response.
        self.client = client_with(httpx2.AsyncClient(transport=httpx2.MockTransport(_built)))
        """The target's SDK client (the request builder)."""
        self._path = path
        self._url = ""
        self._headers: dict[str, str] = {}
        self._timeouts: tuple[str, ...] = ()
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        # Stainless SDKs (openai, anthropic) raise status errors through this one factory.
        self._status_error: Callable[[httpx2.Response], Exception] = (
            self.client._make_status_error_from_response
        )

    async def read(self, body: dict[str, Any], timeout_s: float) -> bytes:
        """The body of the 2xx answer to POSTing ``body``, read whole and decoded. The caller
        bounds the time it takes; ``timeout_s`` (seconds) is what the SDK's headers tell the
        upstream.

        Raises:
            openai.APIStatusError | anthropic.APIStatusError: an error status (4xx, 5xx), as
                the SDK raises it.
            aiohttp.ClientError: the transport failed.
        """
        response = await self._send(body, timeout_s)
        try:
            return await response.read()
        finally:
            response.release()

    async def open(self, body: dict[str, Any], timeout_s: float) -> Reply:
        """The 2xx answer to POSTing ``body`` (a streamed request), its body unread; the
        caller bounds the time it and each read take (``timeout_s`` as in :meth:`read`).
        Close it with :meth:`Reply.aclose` on every exit.

        Raises: as :meth:`read`.
        """
        return Reply(await self._send(body, timeout_s), self._request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.client.close()

    async def _send(self, body: dict[str, Any], timeout_s: float) -> aiohttp.ClientResponse:
        if self._session is None:  # the target's first request: the SDK's own, body included
            content = await self._learn(body, timeout_s)
        else:
            content = _encode(body)
        assert self._session is not None
        headers = self._headers.copy()
        for name in self._timeouts:
            headers[name] = str(timeout_s)
        response = await self._session.post(
            self._url,
            data=content,
            headers=headers,
            proxy=self._proxy,
        )
        if response.status >= 400:
            try:
                content = await response.read()
            finally:
                response.release()
            raise self._status_error(_described(response, self._request(), content))
        return response

    def _request(self) -> httpx2.Request:
        """The request later ones are, as the SDKs' exceptions carry it (no body)."""
        return httpx2.Request("POST", self._url, headers=self._headers)

    async def _learn(self, body: dict[str, Any], timeout_s: float) -> bytes:
        """Has the SDK build the request for ``body``, keeps its URL and the target's own
        headers, and returns the body as the SDK encoded it.

        Opens the session every request goes through, limited as the SDK's client is
        (``DEFAULT_CONNECTION_LIMITS``: 1,000 connections, idle ones kept 5 s), with its TLS
        context (httpx2's: certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``) and its proxy from
        the environment, read once as httpx2 reads it when its client is made (aiohttp's own
        ``trust_env`` reads it, and ``~/.netrc``, on a thread per request). Concurrent first
        requests all learn the same; the first session opened stays.
        """
        built = await self.client.post(
            self._path, cast_to=httpx2.Response, body=body, options={"timeout": timeout_s}
        )
        request = built.request
        if self._session is None:
            self._headers = {
                name: value
                for name, value in request.headers.items()
                if name.lower() not in _PER_REQUEST
            }
            self._timeouts = tuple(name for name in _TIMEOUTS if name in request.headers)
            self._url = str(request.url)
            self._proxy = _env_proxy(request.url)
            sdk = anthropic if isinstance(self.client, anthropic.AsyncAnthropic) else openai
            limits = sdk.DEFAULT_CONNECTION_LIMITS
            connector = aiohttp.TCPConnector(
                limit=limits.max_connections or 0,
                keepalive_timeout=limits.keepalive_expiry or 0,
                ssl=httpx2.create_ssl_context(),
            )
            # No timeouts of aiohttp's own: the caller's attempt limit bounds the connect, the
            # send and every read (``AttemptLimit``), and aiohttp's would arm a timer of its
            # own for each (its read timeout, one per chunk received).
            self._session = aiohttp.ClientSession(connector=connector, timeout=_UNBOUNDED)
        return request.content


def _env_proxy(url: httpx2.URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``ALL_PROXY``, lower case too), unless ``NO_PROXY`` exempts its host: the variables httpx2
    honours (``trust_env``), read by the standard library's ``urllib.request``."""
    if urllib.request.proxy_bypass(url.host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(url.scheme) or proxies.get("all")


def _built(request: httpx2.Request) -> httpx2.Response:
    """The builder's transport: every request answered at once, empty."""
    return httpx2.Response(204, request=request)


def _described(
    response: aiohttp.ClientResponse, request: httpx2.Request, content: bytes
) -> httpx2.Response:
    """``response`` as an httpx2 response carrying ``content`` (already decoded), for the
    SDKs' exception types."""
    headers = [
        (name, value) for name, value in response.headers.items() if name.lower() not in _DECODED
    ]
    return httpx2.Response(response.status, headers=headers, content=content, request=request)
