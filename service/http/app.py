"""The one ASGI app of the HTTP listener: routes each request to its door.

``/v1/messages`` is the Anthropic-compatible door (:mod:`service.http.anthropic_door`), and
so is ``/v1/models`` for a request with an ``anthropic-version`` header (Anthropic's SDKs
send it); the rest of ``/v1/...`` is the OpenAI-compatible door
(:mod:`service.http.openai_door`); ``/switchboard.v1.<Service>/<Method>`` is Connect and
gRPC-Web (:mod:`service.http.connect`); ``/console/`` is the web console's static files
(:mod:`service.http.console`). Anything else is answered 404 in the error shape of the door
the request looks for.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from service.http import anthropic_door
from service.http.anthropic_door import AnthropicDoor
from service.http.asgi import Handler, Receive, Scope, Send, header, respond
from service.http.connect import ServiceApp, prefixes
from service.http.console import PREFIX as CONSOLE
from service.http.context import Failure
from service.http.errors import error_headers, error_json
from service.http.openai_door import OpenAIDoor

_MODELS = "/v1/models/"
_ANTHROPIC_VERSION = b"anthropic-version"


class HttpApp:
    """The ASGI application (``lifespan`` is not used: the App starts and stops it)."""

    def __init__(
        self,
        openai: OpenAIDoor,
        anthropic: AnthropicDoor,
        connect: Sequence[ServiceApp] = (),
        console: Handler | None = None,
    ) -> None:
        self._openai = openai
        self._anthropic = anthropic
        self._connect = prefixes(connect)
        self._console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        service = self._connect.get(path[: path.find("/", 1) + 1])
        if service is not None:
            await service(scope, receive, send)
            return
        if self._console is not None and (path == CONSOLE or path.startswith(CONSOLE + "/")):
            await self._console(scope, receive, send)
            return
        if path.startswith("/v1/messages") or (
            path.startswith("/v1/models") and header(scope, _ANTHROPIC_VERSION) is not None
        ):
            await self._anthropic_route(scope, receive, send, path, method)
        elif path == "/v1/chat/completions":
            if method == "POST":
                await self._openai.chat_completions(scope, receive, send)
                return
            await _refuse(send, 405, f"use POST for {path}", allow="POST")
        elif path == "/v1/models":
            if method == "GET":
                await self._openai.models(scope, receive, send)
                return
            await _refuse(send, 405, f"use GET for {path}", allow="GET")
        elif path.startswith(_MODELS) and len(path) > len(_MODELS):
            if method == "GET":
                await self._openai.model(scope, receive, send, path[len(_MODELS) :])
                return
            await _refuse(send, 405, f"use GET for {path}", allow="GET")
        else:
            await _refuse(send, 404, f"no route for {method} {path[:200]}")

    async def _anthropic_route(
        self, scope: Scope, receive: Receive, send: Send, path: str, method: str
    ) -> None:
        door = self._anthropic
        if path == "/v1/messages" and method == "POST":
            await door.messages(scope, receive, send)
        elif path == "/v1/models" and method == "GET":
            await door.models(scope, receive, send)
        elif path.startswith(_MODELS) and len(path) > len(_MODELS) and method == "GET":
            await door.model(scope, receive, send, path[len(_MODELS) :])
        else:
            await _refuse(send, 404, f"no route for {method} {path[:200]}", anthropic=True)


async def _refuse(
    send: Send, status: int, message: str, *, anthropic: bool = False, allow: str = ""
) -> None:
    """A 404 (no such route) or a 405 (another method: ``allow`` names the one there is, as
    RFC 9110 asks), as an OpenAI (or Anthropic) error object: ``invalid_request_error``, as
    those APIs answer a request for a route or method they do not serve."""
    code = grpc.StatusCode.NOT_FOUND if status == 404 else grpc.StatusCode.INVALID_ARGUMENT
    failure = Failure(code, message, reason="NOT_FOUND" if status == 404 else "METHOD_NOT_ALLOWED")
    if anthropic:
        await anthropic_door.refuse(send, failure)
        return
    headers = error_headers(failure) + ([(b"allow", allow.encode())] if allow else [])
    await respond(send, status, error_json(failure), headers)
