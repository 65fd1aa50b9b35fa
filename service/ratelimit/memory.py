"""The in-process backend: one replica's limits, in dicts. Safe because the event loop runs
one coroutine at a time and nothing here awaits."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from service.ratelimit.base import (
    ALLOWED,
    PERIOD_S,
    SLOT_RETRY_S,
    Decision,
    Rate,
    Slot,
    gcra,
    worse,
)

_SWEEP_EVERY = 4096


class MemoryBackend:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._ops = 0

    async def acquire(
        self, rates: Sequence[Rate], slots: Sequence[Slot], lease_id: str, lease_s: float
    ) -> Decision:
        now = self._clock()
        self._maybe_sweep(now)
        decision = ALLOWED
        new_tats = []
        for i, rate in enumerate(rates):
            new_tat, wait = gcra(self._tats.get(rate.key, now), now, rate.limit, rate.cost)
            if wait > 0:
                decision = worse(decision, i, wait)
            new_tats.append(new_tat)
        for j, slot in enumerate(slots):
            leases = self._live_leases(slot.key, now)
            if len(leases) >= slot.limit:
                decision = worse(decision, len(rates) + j, SLOT_RETRY_S)
        if decision.refused is not None:
            return decision
        for rate, new_tat in zip(rates, new_tats, strict=True):
            self._tats[rate.key] = new_tat
        for slot in slots:
            self._leases.setdefault(slot.key, {})[lease_id] = now + lease_s
        return ALLOWED

    async def adjust(self, rates: Sequence[Rate]) -> None:
        now = self._clock()
        for rate in rates:
            tat = max(self._tats.get(rate.key, now), now) + rate.cost * PERIOD_S / rate.limit
            if tat > now:
                self._tats[rate.key] = tat
            else:
                self._tats.pop(rate.key, None)

    async def release(self, slots: Sequence[Slot], lease_id: str) -> None:
        for slot in slots:
            leases = self._leases.get(slot.key)
            if leases is not None:
                leases.pop(lease_id, None)
                if not leases:
                    del self._leases[slot.key]

    async def ping(self) -> None:
        """Always answers: the state is in this process."""

    async def aclose(self) -> None:
        self._tats.clear()
        self._leases.clear()

    def _live_leases(self, key: str, now: float) -> dict[str, float]:
        leases = self._leases.get(key, {})
        for lease_id in [k for k, expires in leases.items() if expires <= now]:
            del leases[lease_id]
        return leases

    def _maybe_sweep(self, now: float) -> None:
        """Forget rates that are back to full (what a TTL does in Redis)."""
        self._ops += 1
        if self._ops % _SWEEP_EVERY:
            return
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]
