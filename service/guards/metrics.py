"""The guards' records: Prometheus metrics and span events (never the matched text)."""

from __future__ import annotations

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram

from service.domain import GuardVerdict

_SECONDS_BUCKETS = (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1)


class GuardMetrics:
    """``switchboard_guard_verdicts_total{guard,stage,action}`` (one per span acted on) and
    ``switchboard_guard_duration_seconds{guard,stage}`` (one check of one text; a streamed
    answer is checked once per delta). Each verdict is also a ``guard.verdict`` event on
    the call's current span. Guard names come from config, so the labels are bounded."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.verdicts = Counter(
            "switchboard_guard_verdicts",
            "Spans the guards acted on, by guard, stage and action (block, redact, log).",
            ["guard", "stage", "action"],
            registry=registry,
        )
        self.seconds = Histogram(
            "switchboard_guard_duration_seconds",
            "Time one guard took to check one text (or one streamed delta), by guard and stage.",
            ["guard", "stage"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )

    def verdict(self, verdict: GuardVerdict) -> None:
        self.verdicts.labels(verdict.guard, verdict.stage, verdict.action).inc(verdict.count)
        trace.get_current_span().add_event(
            "guard.verdict",
            {
                "switchboard.guard.name": verdict.guard,
                "switchboard.guard.stage": verdict.stage,
                "switchboard.guard.category": verdict.category,
                "switchboard.guard.action": verdict.action,
                "switchboard.guard.count": verdict.count,
            },
        )

    def latency(self, guard: str, stage: str, seconds: float) -> None:
        self.seconds.labels(guard, stage).observe(seconds)
