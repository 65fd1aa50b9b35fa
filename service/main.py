"""``switchboard serve``: run the server until SIGTERM or SIGINT, then drain and exit."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from service.app import App
from service.config import load
from service.observability.logging import configure

log = logging.getLogger(__name__)


async def serve(
    config_path: str,
    environ: Mapping[str, str],
    *,
    host: str | None,
    port: int | None,
    port_file: str | None = None,
) -> None:
    """Serve until a termination signal, then drain within the configured grace period.

    ``port_file``: where to write the bound port once serving (useful with ``--port 0``).

    Raises:
        ConfigError: the config is invalid.
    """
    snapshot = load(config_path, environ)
    configure(snapshot.observability.logs)
    log.info(
        "config loaded",
        extra={
            "event": "config",
            "source": snapshot.source,
            "agents": sorted(snapshot.agents),
            "targets": sorted(snapshot.targets),
            "auth": snapshot.auth.enabled,
            "api_keys": len(snapshot.auth.keys),
            "rate_limit_backend": snapshot.rate_limits.backend,
            "tracing_exporter": snapshot.observability.tracing.exporter,
        },
    )
    app = App(snapshot)
    bound = await app.start(host, port)
    if port_file:
        _write_atomically(Path(port_file), f"{bound}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await app.stop()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
