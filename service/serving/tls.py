"""TLS and mTLS for both listeners (gRPC and HTTP), from files that are reloaded on change.

One :class:`ServerTls` per process reads ``server.tls``: the certificate chain and private key
(PEM) and, for mutual TLS, the CA bundle that client certificates must chain to. Both
listeners use the same files:

- gRPC through ``grpc.dynamic_ssl_server_credentials``: grpc core asks :meth:`_fetch` at each
  new handshake whether the certificate changed (None: keep the one it has), so a rotation
  reaches new connections without a restart and open connections are left alone.
- HTTP (uvicorn) through one ``ssl.SSLContext`` whose SNI callback hands every handshake the
  newest context (``SSLObject.context = ...``, the documented way to switch contexts, called
  whether or not the client sent a server name). The verify mode is the listener's (fixed at
  start); the certificate, key and trusted client CAs are the newest context's.

:meth:`ServerTls.check` (polled by the reloader's loop, like the keys file) re-reads the files
when one changed (a Kubernetes Secret's symlink swap included: ``config.watch``). A new set that
does not load (a key that does not match its certificate, a half-written file) is refused: the
old one stays, the error is logged and counted, and the next change is tried again.

grpc's Python API offers no "request but do not require" client certificates, so a
``client_ca_file`` means mTLS is required on both listeners.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from prometheus_client import CollectorRegistry, Counter

from service.config import ConfigError
from service.config.watch import FileWatcher

if TYPE_CHECKING:
    from service.config import Snapshot

log = logging.getLogger(__name__)


class TlsError(Exception):
    """The TLS files cannot be used; the message names the file, never its content."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the PEM files are (already resolved against the config file's folder)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.cert, self.key, self.client_ca) if p is not None)


@dataclass(frozen=True, slots=True)
class _Material:
    """One loaded set: the PEM bytes (for grpc) and an SSL context built from them (HTTP)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    context: ssl.SSLContext


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsError(f"server.tls.{what}: cannot read {path}: {exc.strerror}") from exc


def _context(files: TlsFiles, client_ca: bytes | None) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) for ``files``.

    Raises:
        TlsError: the certificate or key is not PEM, they do not match, or the CA bundle
            holds no certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsError(
            f"server.tls: the certificate {files.cert} and key {files.key} do not load "
            f"together ({getattr(exc, 'reason', None) or exc.__class__.__name__})"
        ) from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(
                f"server.tls.client_ca_file: {files.client_ca} holds no usable CA certificate "
                f"({getattr(exc, 'reason', None) or exc.__class__.__name__})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    # HTTP/1.1 only: the HTTP listener (uvicorn) speaks no HTTP/2.
    context.set_alpn_protocols(["http/1.1"])
    return context


def load_material(files: TlsFiles) -> _Material:
    """Read and check one set of files.

    Raises:
        TlsError: a file is unreadable or the set does not load.
    """
    cert = _read(files.cert, "cert_file")
    key = _read(files.key, "key_file")
    client_ca = None if files.client_ca is None else _read(files.client_ca, "client_ca_file")
    return _Material(cert, key, client_ca, _context(files, client_ca))


class ServerTls:
    """See the module docstring. Build it before the listeners (it raises on bad files)."""

    def __init__(
        self, files: TlsFiles, *, on_reload: Callable[[str], None] = lambda _result: None
    ) -> None:
        """``on_reload(result)`` is told "ok" or "rejected" after each re-read.

        Raises:
            TlsError: the files cannot be used.
        """
        self.files = files
        self._on_reload = on_reload
        self._material = load_material(files)
        self._generation = 0
        self._fetched = 0  # the generation grpc core has
        self._watcher = FileWatcher(*files.paths)
        # The HTTP listener's context: its verify mode holds for every handshake; the SNI
        # callback switches each handshake to the newest context.
        self._front = _context(files, self._material.client_ca)
        self._front.sni_callback = self._pick_context

    @property
    def mutual(self) -> bool:
        """True when client certificates are required."""
        return self.files.client_ca is not None

    @property
    def generation(self) -> int:
        """How many times the files were reloaded."""
        return self._generation

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._grpc_config(),
            # grpc documents None ("no change") as a fetcher's answer; its stubs do not.
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The HTTP listener's context (the same object for the life of the process)."""
        return self._front

    def check(self) -> bool:
        """Re-read the files if one changed; True when a new set was taken. Never raises: a
        set that does not load is logged and the current one kept."""
        if not self._watcher.changed():
            return False
        try:
            material = load_material(self.files)
        except TlsError as exc:
            log.error("TLS files rejected, keeping the current certificate: %s", exc)  # noqa: TRY400
            self._on_reload("rejected")
            return False
        self._material = material
        self._generation += 1
        log.info("TLS certificate reloaded", extra={"cert_file": str(self.files.cert)})
        self._on_reload("ok")
        return True

    async def watch(self, interval_s: Callable[[], float]) -> None:
        """:meth:`check` every ``interval_s()`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s())
            self.check()

    def _grpc_config(self) -> grpc.ServerCertificateConfiguration:
        material = self._material
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.client_ca
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpc core, at each new handshake: a new configuration, or None to keep its own."""
        generation = self._generation
        if generation == self._fetched:
            return None
        self._fetched = generation
        return self._grpc_config()

    def _pick_context(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        connection.context = self._material.context


def build_tls(snapshot: Snapshot, registry: CollectorRegistry) -> ServerTls | None:
    """``server.tls`` loaded (paths relative to the config file), or None for plaintext; its
    re-reads counted in ``switchboard_tls_reloads_total{result}`` in ``registry``.

    Raises:
        ConfigError: a file is unreadable, or the certificate and key do not match.
    """
    settings = snapshot.server.tls
    if settings is None:
        return None
    base = Path(snapshot.source).parent
    files = TlsFiles(
        cert=base / settings.cert_file,
        key=base / settings.key_file,
        client_ca=None if settings.client_ca_file is None else base / settings.client_ca_file,
    )
    reloads = Counter(
        "switchboard_tls_reloads",
        "Re-reads of the TLS files after a change: ok, or rejected (the old ones stay).",
        ["result"],
        registry=registry,
    )
    for result in ("ok", "rejected"):
        reloads.labels(result)
    try:
        return ServerTls(files, on_reload=lambda result: reloads.labels(result).inc())
    except TlsError as exc:
        raise ConfigError(str(exc)) from None
