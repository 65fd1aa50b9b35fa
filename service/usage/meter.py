"""What one call was charged, for the layers around it (the tokens-per-minute limit).

The rate-limit layer opens a :class:`Meter` for the call; the state pipeline, which alone
knows what the call cost (the usage the upstream reported, or the estimate of a call that
ended without it), writes the charged tokens into it on every exit path. A contextvar
carries it, as the call context is carried.
"""

from __future__ import annotations

import contextvars


class Meter:
    """The tokens charged to one call; None until the pipeline charged it."""

    __slots__ = ("tokens",)

    def __init__(self) -> None:
        self.tokens: int | None = None


_METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar(
    "switchboard_meter", default=None
)


def open_meter() -> Meter:
    """A fresh meter, current from now on in this call's task (each call runs in a task of
    its own, with its own copy of the context, so nothing is reset: a generator's frames may
    be closed from elsewhere, where a reset would fail)."""
    meter = Meter()
    _METER.set(meter)
    return meter


def charge(tokens: int) -> None:
    """Record ``tokens`` on the current call's meter (none outside a metered call)."""
    meter = _METER.get()
    if meter is not None:
        meter.tokens = tokens
