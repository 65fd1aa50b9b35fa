"""CPU-bound Python work off the event loop, one piece at a time.

Some per-request work grows with the input and is pure Python (converting a big body,
checking a caller's JSON schemas against the metaschema). On the event loop it stalls every
other call and the health probes. In a worker thread the loop keeps getting turns, but only
as long as few threads want the GIL: the interpreter hands it over every 5 ms
(``sys.getswitchinterval()``), so with eight busy threads the loop waits for seven others
at each turn, and a probe that needs a dozen turns takes a second. So the work goes to a
thread through a small number of lanes (default one): heavy requests queue behind each
other, everything else keeps its latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Offload:
    """``await offload.run(fn, *args)``: ``fn(*args)`` in a worker thread, at most ``lanes``
    at a time. Cancelling the caller stops the wait, not a piece already running (a thread
    cannot be interrupted; it finishes and its result is dropped)."""

    def __init__(self, lanes: int = 1) -> None:
        self._lanes = asyncio.Semaphore(lanes)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        async with self._lanes:
            return await asyncio.to_thread(fn, *args)
