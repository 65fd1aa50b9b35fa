"""The HTTP listener: uvicorn serving the ASGI app in the gRPC server's process and event loop.

uvicorn because it runs inside an existing asyncio loop (``Server.serve`` is a coroutine),
its httptools parser is the fastest HTTP/1.1 path among the maintained asyncio servers
(docs/benchmarks.md: measured against hypercorn), and it drains: on stop it closes the
listening socket, lets in-flight requests finish within the grace period, then cancels
them. Its own signal handling is switched off: the process's SIGTERM/SIGINT handling
(:mod:`service.main`) stops the gRPC server and this listener together.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import Generator

import uvicorn

from service.http.asgi import Handler


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the App owns the process's signals


class HttpListener:
    """Serves ``app`` on one socket; :meth:`start` binds it, :meth:`stop` drains it."""

    def __init__(
        self, app: Handler, *, reuse_port: bool = False, tls: ssl.SSLContext | None = None
    ) -> None:
        """``tls``: serve HTTPS with this context (:meth:`service.serving.tls.ServerTls.
        ssl_context`, which follows certificate reloads by itself)."""
        self._app = app
        self._reuse_port = reuse_port
        self._tls = tls
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def app(self) -> Handler:
        """The ASGI app it serves (bench/asgi_servers.py serves it with another server)."""
        return self._app

    async def start(self, host: str, port: int, *, grace_s: float) -> int:
        """Bind ``host:port`` (0: a free port) and serve; returns the bound port.

        Raises:
            OSError: the address cannot be bound (the OS's reason in ``strerror``).
        """
        sock = _bind(host, port, reuse_port=self._reuse_port)
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            http="httptools",  # named, not uvicorn's "auto": a missing httptools fails here
            log_config=None,
            access_log=False,
            server_header=False,
            ws="none",
            timeout_graceful_shutdown=math.ceil(grace_s),
            ssl_context_factory=None if self._tls is None else self._context,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        # Bounded: startup only creates the server on the bound socket.
        async with asyncio.timeout(30):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                    raise OSError("the HTTP listener stopped while starting")
                await asyncio.sleep(0.01)
        self.port = int(sock.getsockname()[1])
        return self.port

    def _context(self, _config: uvicorn.Config, _default: object) -> ssl.SSLContext:
        assert self._tls is not None
        return self._tls

    async def stop(self, grace_s: float) -> None:
        """Stop accepting connections; requests in flight get ``grace_s`` to finish, then
        are cancelled."""
        if self._server is None or self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = math.ceil(grace_s)
        self._server.should_exit = True
        await asyncio.wait([self._task])


def _bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # Accepted connections inherit it (Linux). Without it, uvicorn's two writes (the
        # head, then the body) meet Nagle's algorithm and the client's delayed ACK: every
        # small answer waited ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
