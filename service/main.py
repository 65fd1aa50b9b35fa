"""``switchboard serve``: run the server until SIGTERM or SIGINT, then drain and exit.

SIGHUP reloads the config file (so does a change to it, see ``service.reload``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from pathlib import Path

from service.app import App
from service.config import Snapshot
from service.observability.logging import configure
from service.serving.worker import WorkerLink, write_port_file

log = logging.getLogger(__name__)


async def serve(
    snapshot: Snapshot,
    environ: Mapping[str, str],
    *,
    host: str | None,
    port: int | None,
    port_file: str | Path | None = None,
    worker: WorkerLink | None = None,
) -> None:
    """Serve until a termination signal, then drain within the configured grace period.

    ``port_file``: where to write the bound port once serving (useful with ``--port 0``).
    ``worker`` is set in a worker process of ``serve --workers N``: the port is shared
    (SO_REUSEPORT), readiness is reported to the supervisor, and the worker stops if the
    supervisor dies. ``snapshot``: the config, loaded once by the caller; ``environ`` is
    what reloads read overrides and secrets from.

    Raises:
        ConfigError: the config cannot be served.
    """
    # Until the handler below is installed, a SIGHUP (a reload) must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure(snapshot.observability.logs)
    log.info(
        "config loaded",
        extra={
            "event": "config",
            "source": snapshot.source,
            "agents": sorted(snapshot.agents),
            "workflows": sorted(snapshot.workflows),
            "targets": sorted(snapshot.targets),
            "auth": snapshot.auth.enabled,
            "api_keys": len(snapshot.auth.keys),
            "rate_limit_backend": snapshot.rate_limits.backend,
        },
    )
    app = App(snapshot, environ=environ, worker=worker is not None)
    try:
        bound = await app.start(host, port)
    except BaseException:
        await app.stop(0)  # close what was opened (stores, providers) before failing
        raise
    if port_file:
        write_port_file(port_file, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app.reloader.request)
    if worker is not None:
        worker.watch_lifeline(stop)
        worker.report_ready(bound)
    try:
        await stop.wait()
    finally:
        try:
            await app.stop()  # a second SIGTERM meanwhile changes nothing
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
