"""The web console's files, served on the HTTP port under ``/console/``.

The console is a static page (``service/http/console/``: one HTML file, one script, one
stylesheet, no framework and no build step) that calls AdminService, and ApprovalService when
the server has it, through the Connect door's JSON on the same port. The files hold no data:
everything the page shows comes from those calls, which need a key with the ``admin`` scope
(the page asks for one and keeps it in the tab's sessionStorage, sent as
``authorization: Bearer``; no cookie, so no CSRF surface). Answers carry a strict Content
Security Policy: only this origin's script and style, no inline code, no framing.
"""

from __future__ import annotations

from importlib import resources

from service.http.asgi import Receive, Scope, Send, respond

PREFIX = "/console"
_TYPES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}
_SECURITY = [
    (
        b"content-security-policy",
        (
            b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            b"img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
        ),
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class Console:
    """The ASGI handler for paths under :data:`PREFIX`. The files are read once."""

    def __init__(self) -> None:
        folder = resources.files("service.http") / "console"
        self._files = {name: (folder / name).read_bytes() for name in _TYPES}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == PREFIX:
            await respond(send, 308, b"", [(b"location", b"/console/"), *_SECURITY])
            return
        name = path[len(PREFIX) + 1 :] or "index.html"
        body = self._files.get(name)
        if body is None:
            await respond(send, 404, b"not found", [(b"content-type", b"text/plain"),
                                                    *_SECURITY])  # fmt: skip
            return
        if scope["method"] not in ("GET", "HEAD"):
            await respond(send, 405, b"use GET", [(b"allow", b"GET, HEAD"), *_SECURITY])
            return
        headers = [(b"content-type", _TYPES[name]), *_SECURITY]
        await respond(send, 200, b"" if scope["method"] == "HEAD" else body, headers)
