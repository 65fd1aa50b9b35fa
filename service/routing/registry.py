"""The long-lived per-target resilience state: breaker, retry budget, latency window.

Built once in ``app.py`` and handed to every Router, so a config reload (which builds a new
Router) keeps the breakers open or closed, the budgets and the latency history. Settings
are re-applied with :meth:`TargetRegistry.configure`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.routing.breaker import Breaker, StateListener, StorageFactory
from service.routing.budget import RetryBudget
from service.routing.hedge import LatencyWindow
from service.routing.policy import ResilienceSpec


@dataclass(slots=True)
class TargetState:
    name: str
    breaker: Breaker
    budget: RetryBudget
    latency: LatencyWindow


class TargetRegistry:
    """Resilience state by target name. Used from the event loop."""

    def __init__(
        self,
        spec: ResilienceSpec | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        storage: StorageFactory | None = None,
    ) -> None:
        self._spec = spec or ResilienceSpec()
        self._clock = clock
        self._monotonic = monotonic
        self._storage = storage
        self._targets: dict[str, TargetState] = {}
        self._listeners: list[StateListener] = []

    def subscribe(self, listener: StateListener) -> None:
        """Call ``listener(target, state)`` on every breaker state change, and once for
        each target as it is first created."""
        self._listeners.append(listener)
        for name, state in self._targets.items():
            listener(name, state.breaker.state)

    def configure(self, spec: ResilienceSpec, names: Iterable[str]) -> None:
        """Apply ``spec`` to every existing target, and create the targets in ``names``
        that do not exist yet. Targets no longer configured keep their state (a reload
        may bring them back)."""
        self._spec = spec
        for name, state in self._targets.items():
            state.breaker.configure(spec.breaker(name))
            state.budget.configure(spec.budget(name))
        for name in names:
            self.get(name)

    def get(self, name: str) -> TargetState:
        state = self._targets.get(name)
        if state is None:
            breaker = Breaker(
                name,
                self._spec.breaker(name),
                clock=self._clock,
                storage=self._storage(name) if self._storage else None,
                on_change=self._notify,
            )
            state = TargetState(
                name=name,
                breaker=breaker,
                budget=RetryBudget(self._spec.budget(name), clock=self._monotonic),
                latency=LatencyWindow(),
            )
            self._targets[name] = state
            self._notify(name, breaker.state)
        return state

    def breaker_states(self) -> dict[str, str]:
        """Each known target's breaker state, by target name."""
        return {name: s.breaker.state for name, s in sorted(self._targets.items())}

    def _notify(self, target: str, state: str) -> None:
        for listener in self._listeners:
            listener(target, state)
