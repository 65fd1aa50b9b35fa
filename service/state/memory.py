"""Fast state in process memory: budget counters, response cache, idempotency keys.

For the embedded mode (one process). Every operation runs without awaiting in between, so it
is atomic on the event loop. The response cache and the idempotency records are cachetools'
``TLRUCache``: each entry expires at its own time, expired entries go first when one is added,
and past ``max_entries`` the least recently used is evicted (an evicted idempotency record only
means a duplicate of that request may run again). Budget lines expire when touched, and are
swept now and then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import TLRUCache

from service.state.records import NEEDS_SEED, BudgetLine, Claim

SWEEP_EVERY = 1024
DEFAULT_MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Line:
    spent: int | None = None  # None: no counter (never seeded, or a seed under way)
    expires_at: float = 0.0
    held: dict[str, tuple[int, float]] = field(default_factory=dict)  # id → (amount, until)
    seeding: str = ""  # the token of the seed under way
    seeding_until: float = 0.0
    pre: int = 0  # spend that landed while it was seeded


class MemoryFast:
    """See the module docstring. ``clock`` is wall time in seconds (tests pass their own)."""

    def __init__(
        self, clock: Callable[[], float] = time.time, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._lines: dict[str, _Line] = {}
        # Values are (value, expires_at): each entry's own time to use.
        self._cache: TLRUCache[str, tuple[bytes, float]] = TLRUCache(
            max_entries, _expires_at, timer=clock
        )
        self._claims: TLRUCache[str, tuple[Claim, float]] = TLRUCache(
            max_entries, _expires_at, timer=clock
        )
        self._ops = 0
        # One process's memory: its counters live and die with it (a new one re-seeds).
        self._epoch = uuid.uuid4().hex

    # budgets (see service.state.redis_budgets for the semantics; one process: atomic)

    def _line(self, line: BudgetLine, now: float, *, create: bool = False) -> _Line | None:
        """The line's live state (expired holds dropped); None when it has none."""
        state = self._lines.get(line.key)
        if state is not None and state.expires_at <= now:
            del self._lines[line.key]
            state = None
        if state is None:
            if not create:
                return None
            state = self._lines[line.key] = _Line(expires_at=now + line.ttl_s)
        state.held = {k: v for k, v in state.held.items() if v[1] > now}
        return state

    @staticmethod
    def _spend(state: _Line | None, amount: int) -> bool:
        if state is None:
            return False
        if state.spent is not None:
            state.spent += amount
        elif state.seeding:
            state.pre += amount
        else:
            return False
        return True

    async def epoch(self, rebuild_s: float = 0.0) -> str:
        return self._epoch  # lost only with the process: nobody else to wait for

    async def reserve(
        self, lines: Sequence[BudgetLine], reservation: str, amount: int, hold_s: float, epoch: str
    ) -> int:
        return self._take(lines, reservation, amount, hold_s, epoch, grow=False)

    async def grow(
        self, lines: Sequence[BudgetLine], reservation: str, amount: int, hold_s: float, epoch: str
    ) -> int:
        return self._take(lines, reservation, amount, hold_s, epoch, grow=True)

    def _take(
        self,
        lines: Sequence[BudgetLine],
        reservation: str,
        amount: int,
        hold_s: float,
        epoch: str,
        *,
        grow: bool,
    ) -> int:
        """``reserve``, or with ``grow``, ``amount`` added to the reservation's hold (its
        expiry kept): the same admission, all lines or none."""
        now = self._tick()
        found = [self._line(line, now) for line in lines]
        states = [s for s in found if s is not None and s.spent is not None]
        if epoch != self._epoch or len(states) < len(lines):
            return NEEDS_SEED
        for i, (line, state) in enumerate(zip(lines, states, strict=True)):
            held = sum(a for a, _ in state.held.values())
            if (state.spent or 0) + held + amount > line.limit_nanos:
                return i
        fresh = (0, now + hold_s)
        for state in states:
            old, until = state.held.get(reservation, fresh) if grow else fresh
            state.held[reservation] = (old + amount, until)
        return -1

    async def hold(
        self, lines: Sequence[BudgetLine], hold_id: str, amount: int, hold_s: float
    ) -> None:
        now = self._tick()
        for line in lines:
            state = self._line(line, now, create=True)
            assert state is not None
            state.held[hold_id] = (amount, now + hold_s)

    async def settle(self, lines: Sequence[BudgetLine], reservation: str, amount: int) -> bool:
        now = self._tick()
        missing = False
        for line in lines:
            state = self._line(line, now)
            if state is not None:
                state.held.pop(reservation, None)
            missing |= not self._spend(state, amount)
        return missing

    async def settle_pending(
        self, lines: Sequence[BudgetLine], reservation: str, line_id: str, amount: int
    ) -> None:
        now = self._tick()
        for line in lines:
            state = self._line(line, now, create=True)
            assert state is not None
            state.held.pop(reservation, None)
            state.held[f"ob:{line_id}"] = (amount, now + line.ttl_s)

    async def landed(
        self, lines: Sequence[BudgetLine], line_id: str, amount: int, epoch: str
    ) -> None:
        now = self._tick()
        for line in lines:
            state = self._line(line, now)
            held = state is not None and state.held.pop(f"ob:{line_id}", None) is not None
            if held or epoch != self._epoch:
                self._spend(state, amount)

    async def release(self, lines: Sequence[BudgetLine], reservation: str) -> None:
        await self.settle(lines, reservation, 0)

    async def spent(self, line: BudgetLine) -> tuple[int, int]:
        state = self._line(line, self._tick())
        if state is None:
            return 0, 0
        return state.spent or 0, sum(a for a, _ in state.held.values())

    async def begin_seed(self, line: BudgetLine, token: str, lease_s: float) -> int:
        now = self._tick()
        state = self._line(line, now, create=True)
        assert state is not None
        if state.spent is not None:
            return 0
        if state.seeding and state.seeding != token and state.seeding_until > now:
            return -1
        state.seeding, state.seeding_until, state.pre = token, now + lease_s, 0
        return 1

    async def end_seed(self, line: BudgetLine, token: str, spent: int) -> bool:
        now = self._tick()
        state = self._line(line, now)
        if state is None or state.seeding != token or state.seeding_until <= now:
            return False
        state.spent, state.seeding, state.pre = spent + state.pre, "", 0
        state.expires_at = now + line.ttl_s
        return True

    # cache

    async def get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)  # None when absent or expired; a hit is the newest use
        return None if entry is None else entry[0]

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache[key] = (value, self._clock() + ttl_s)

    async def lead(self, key: str, token: str, lease_s: float) -> bool:
        return True  # one process: its in-process single-flight is the whole story

    async def unlead(self, key: str, token: str) -> None:
        return None

    # idempotency

    async def claim(self, key: str, fingerprint: str, lease_s: float) -> Claim:
        held = self._claims.get(key)
        if held is not None:
            return held[0]
        self._claims[key] = (Claim("pending", fingerprint), self._clock() + lease_s)
        return Claim("new", fingerprint)

    async def complete(self, key: str, fingerprint: str, result: bytes, ttl_s: float) -> None:
        self._claims[key] = (Claim("done", fingerprint, result), self._clock() + ttl_s)

    async def abandon(self, key: str) -> None:
        self._claims.pop(key, None)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._cache.clear()

    def _tick(self) -> float:
        now = self._clock()
        self._ops += 1
        if self._ops % SWEEP_EVERY == 0:
            self._lines = {k: v for k, v in self._lines.items() if v.expires_at > now}
        return now


def _expires_at(_key: Any, value: tuple[Any, float], _now: float) -> float:
    """The time to use of a ``(value, expires_at)`` entry: cachetools' ``ttu``."""
    return value[1]
