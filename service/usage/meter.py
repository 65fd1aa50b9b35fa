"""What one call was charged, for the layers around it (the tokens-per-minute limit).

The rate-limit layer opens a :class:`Meter` for the call; the state pipeline, which alone
knows what the call cost (the usage the upstream reported, or the estimate of a call that
ended without it), writes the charged tokens into it on every exit path. The pipeline also
learns what the call sends beyond its request (a session's history) before it goes upstream,
and reserves that too (:func:`reserve`), so the limit's reservation stays an upper bound. A
contextvar carries the meter, as the call context is carried.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable


class Meter:
    """The tokens charged to one call (None until the pipeline charged it), and how to
    reserve more of the call's limits (``extend``; None: nothing to reserve)."""

    __slots__ = ("extend", "tokens")

    def __init__(self, extend: Callable[[int], Awaitable[None]] | None = None) -> None:
        self.tokens: int | None = None
        self.extend = extend


_METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar(
    "switchboard_meter", default=None
)


def open_meter(extend: Callable[[int], Awaitable[None]] | None = None) -> Meter:
    """A fresh meter, current from now on in this call's task (each call runs in a task of
    its own, with its own copy of the context, so nothing is reset: a generator's frames may
    be closed from elsewhere, where a reset would fail)."""
    meter = Meter(extend)
    _METER.set(meter)
    return meter


async def reserve(tokens: int) -> None:
    """Reserve ``tokens`` more on the current call's limits (none outside a metered call).

    Raises:
        ResourceExhausted: a tokens-per-minute limit has no room for them.
    """
    meter = _METER.get()
    if meter is not None and meter.extend is not None and tokens > 0:
        await meter.extend(tokens)


def charge(tokens: int) -> None:
    """Record ``tokens`` on the current call's meter (none outside a metered call)."""
    meter = _METER.get()
    if meter is not None:
        meter.tokens = tokens
