"""The response cache's metric: lookups by agent and result (hit or miss)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lookups = Counter(
            "switchboard_cache_lookups",
            "Response cache lookups, by agent and result (hit or miss).",
            ["agent", "result"],
            registry=registry,
        )

    def observe(self, agent: str, hit: bool) -> None:
        self.lookups.labels(agent, "hit" if hit else "miss").inc()
