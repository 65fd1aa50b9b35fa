"""The rate-limit backend interface and the GCRA arithmetic both backends share.

Rates use GCRA (the generic cell rate algorithm): each limit stores one number, the
theoretical arrival time (TAT). A limit of ``L`` per minute spaces units ``60/L`` seconds
apart and allows a burst of ``L``. A call costing ``n`` is allowed when
``max(TAT, now) + n * 60/L - 60 <= now``; otherwise the excess is exactly how long to wait.
Concurrency uses leases that expire on their own, so a crashed replica cannot leak slots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

PERIOD_S = 60.0
# A stream slot frees when some stream ends, which nobody can predict: retry soon.
SLOT_RETRY_S = 1.0
NEVER = math.inf  # the call alone costs more than the limit allows in a period


# NamedTuples rather than frozen dataclasses: several are built on every call, and a tuple
# is built several times faster.


class Rate(NamedTuple):
    """One per-minute limit that a call consumes ``cost`` of (negative: a refund)."""

    key: str  # storage key, namespaced by tenant (and key id)
    limit: int  # per minute
    cost: int
    name: str  # e.g. "tokens_per_min"
    subject: str  # e.g. "tenant:acme", "key:3f9a0c1b2d4e"


class Slot(NamedTuple):
    """One concurrency limit: at most ``limit`` leases at once."""

    key: str
    limit: int
    name: str
    subject: str


class Decision(NamedTuple):
    """``refused`` is the index (in rates then slots) of the limit with the longest wait."""

    refused: int | None = None
    wait_s: float = 0.0  # NEVER when waiting cannot help


ALLOWED = Decision()


class BackendError(Exception):
    """The backend could not answer (connection, timeout); never a refusal."""


class Backend(Protocol):
    async def acquire(
        self, rates: Sequence[Rate], slots: Sequence[Slot], lease_id: str, lease_s: float
    ) -> Decision:
        """Atomically: if every rate has room and every slot a free lease, consume them all
        and take a lease of ``lease_s`` in each slot; else change nothing.

        Raises:
            BackendError: the backend did not answer.
        """
        ...

    async def adjust(self, rates: Sequence[Rate]) -> None:
        """Consume (or refund, for a negative cost) without checking the limit.

        Raises:
            BackendError: the backend did not answer.
        """
        ...

    async def release(self, slots: Sequence[Slot], lease_id: str) -> None:
        """Give the leases back. Raises BackendError."""
        ...

    async def ping(self) -> None:
        """Answer when the backend can take calls. Raises BackendError."""
        ...

    async def aclose(self) -> None: ...


def gcra(tat: float, now: float, limit: int, cost: int) -> tuple[float, float]:
    """``(new_tat, wait_s)`` for consuming ``cost`` of a ``limit``/minute rate at ``now``.

    ``wait_s <= 0`` means allowed (store ``new_tat``); ``NEVER`` (infinite) means the cost
    exceeds the limit; otherwise the call may be retried after ``wait_s`` seconds.
    """
    if cost > limit:
        return tat, NEVER
    # Relative to now, so large clock values lose no precision; a wait under a
    # microsecond is rounding, not a refusal.
    ahead = max(tat - now, 0.0) + cost * PERIOD_S / limit
    wait = ahead - PERIOD_S
    return now + ahead, wait if wait > 1e-6 else 0.0


def worse(a: Decision, index: int, wait_s: float) -> Decision:
    """The refusal to report: the one with the longest wait (NEVER is the longest)."""
    if a.refused is None or wait_s > a.wait_s:
        return Decision(index, wait_s)
    return a
