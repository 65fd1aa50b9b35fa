"""Watches the stores and reports them through a health status callback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from service.errors import Unavailable
from service.state.stores import Stores

log = logging.getLogger(__name__)

HEALTH_NAME = "switchboard.state"


async def watch(
    stores: Stores, report: Callable[[bool], Awaitable[None]], interval_s: float
) -> None:
    """Ping the stores every ``interval_s`` and ``report(healthy)``; runs until cancelled."""
    healthy: bool | None = None
    while True:
        try:
            await stores.ping()
            now = True
        except Unavailable as exc:
            now = False
            if healthy is not False:
                log.warning("state stores unhealthy: %s", exc.message)
        if now != healthy:
            if now and healthy is False:
                log.info("state stores healthy again")
            healthy = now
            await report(now)
        await asyncio.sleep(interval_s)
