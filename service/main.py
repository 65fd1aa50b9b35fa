"""``switchboard serve``: run the server until SIGTERM or SIGINT, then drain and exit."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from service.app import App
from service.config import load

log = logging.getLogger(__name__)


async def serve(
    config_path: str, environ: Mapping[str, str], *, host: str | None, port: int | None
) -> None:
    """Serve until a termination signal, then drain within the configured grace period.

    Raises:
        ConfigError: the config is invalid.
    """
    snapshot = load(config_path, environ)
    app = App(snapshot)
    await app.start(host, port)
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
