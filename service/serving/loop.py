"""The event loop ``switchboard serve`` runs on (``server.event_loop``).

uvloop (libuv underneath) by default: the same calls cost less of the loop's time than on the
standard library's loop (docs/benchmarks.md has the figures); ``asyncio`` turns it off. Read
once at start: a reload cannot change the loop the process already runs on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

EventLoop = Literal["uvloop", "asyncio"]


def loop_factory(name: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What :class:`asyncio.Runner` takes as ``loop_factory`` for ``name``: None for the
    standard library's loop."""
    if name == "uvloop":
        import uvloop  # noqa: PLC0415 (only the serving process needs it)

        return uvloop.new_event_loop
    return None
