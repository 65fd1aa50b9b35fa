"""Watches the stores and reports them through a health status callback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from service.errors import Unavailable
from service.state.stores import Stores

log = logging.getLogger(__name__)

HEALTH_NAME = "switchboard.state"


async def healthy(stores: Stores) -> bool:
    """One ping of every store; logs what is down."""
    try:
        await stores.ping()
    except Unavailable as exc:
        log.warning("state stores unhealthy: %s", exc.message)
        return False
    return True


async def watch(
    stores: Stores,
    report: Callable[[bool], Awaitable[None]],
    interval_s: float,
    *,
    last: bool | None = None,
) -> None:
    """Ping the stores every ``interval_s`` and ``report(healthy)`` on each change from
    ``last``; runs until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        now = await healthy(stores)
        if now != last:
            if now:
                log.info("state stores healthy again")
            last = now
            await report(now)
