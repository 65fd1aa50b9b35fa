"""Unexpected exceptions: logged with their traceback once per kind and window.

A bug that every request can reach must not write a traceback per request (a caller could
fill the disk, and the log drowns in copies). A *kind* is the exception's type and the place
it was raised (the innermost frame of its traceback); the first of a kind in a window is
logged with its traceback, later ones in the window only counted, and the next log line of
that kind says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import LRUCache

log = logging.getLogger("switchboard.faults")

DEFAULT_WINDOW_S = 60.0
MAX_KINDS = 1024  # kinds remembered; the least recently seen is forgotten past it


@dataclass(slots=True)
class _Seen:
    logged_at: float
    suppressed: int = 0


def kind_of(exc: BaseException) -> tuple[str, str]:
    """``(type, where)``: the exception's qualified type and ``file:line`` of the innermost
    frame it passed through ("" when it carries no traceback)."""
    kind = type(exc)
    name = f"{kind.__module__}.{kind.__qualname__}"
    tb = exc.__traceback__
    if tb is None:
        return name, ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return name, f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


class FaultLog:
    """Rate-limited logging of unexpected exceptions (see the module docstring).

    ``window_s``: seconds during which a kind is logged at most once. ``clock``: monotonic
    seconds (tests pass their own).
    """

    def __init__(
        self,
        window_s: float = DEFAULT_WINDOW_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._window_s = window_s
        self._clock = clock
        self._log = logger
        self._seen: LRUCache[tuple[str, str], _Seen] = LRUCache(MAX_KINDS)

    def report(self, exc: BaseException) -> bool:
        """Log ``exc`` with its traceback unless its kind was logged within the window;
        returns whether it was logged."""
        kind = kind_of(exc)
        now = self._clock()
        seen = self._seen.get(kind)  # a hit is the kind's newest use
        if seen is not None and now - seen.logged_at < self._window_s:
            seen.suppressed += 1
            return False
        suppressed = seen.suppressed if seen is not None else 0
        self._seen[kind] = _Seen(now)  # past MAX_KINDS, the least recently seen goes
        self._log.error(
            "unexpected error while serving a call",
            exc_info=exc,
            extra={
                "error_type": kind[0],
                "where": kind[1],
                "suppressed": suppressed,
                "window_s": self._window_s,
            },
        )
        return True
