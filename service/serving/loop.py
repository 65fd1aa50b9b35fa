"""The event loop a server process runs on: uvloop (libuv) where it is installed, else
asyncio's own.

uvloop runs the same asyncio programs with its scheduling, sockets and timers in C;
grpc.aio, the SDKs' HTTP clients, asyncpg and redis run on it unchanged. Measured with
``bench/peers.py`` (README, Benchmarks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or ``None`` (asyncio's default) when uvloop is missing."""
    try:
        import uvloop  # noqa: PLC0415 (optional: not built for every platform)
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` gives."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
