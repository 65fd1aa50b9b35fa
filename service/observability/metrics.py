"""Prometheus metrics: one registry per App (never the global one), served on its own port.

Label values are bounded: methods are the registered ones, agents, targets, models and budgets
are names from config (an unknown agent name a caller sends is counted as ``(unknown)``),
tenants come from keys, and limit names are fixed. A call's method is two labels, as the RPC
conventions' ``rpc.service`` and ``rpc.method``: ``rpc_service`` (``switchboard.v1.AgentService``)
and ``rpc_method`` (``Invoke``); not ``service``, which Kubernetes service discovery (a
ServiceMonitor) adds to every series as the target's label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from threading import Thread
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from service.observability.collectors import register_standard

if TYPE_CHECKING:
    from service.config.state_model import BudgetConfig
    from service.interceptors.observe import CallRecord
    from service.state.records import UsageRecord

log = logging.getLogger(__name__)

UNKNOWN = "(unknown)"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(frozen=True, slots=True)
class _Children:
    calls: Counter
    seconds: Histogram
    ttft: Histogram
    tokens_in: Counter
    tokens_out: Counter


class Metrics:
    """Every metric the service exports, in one registry."""

    def __init__(
        self, known_agents: Callable[[], Container[str]], budgets: Iterable[BudgetConfig] = ()
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        register_standard(self.registry)
        self._known_agents = known_agents
        r = self.registry
        self.calls = Counter(
            "switchboard_calls",
            "Agent calls served (not health or reflection), by door, RPC service and method, "
            "agent, tenant and final status code.",
            ["door", "rpc_service", "rpc_method", "agent", "tenant", "code"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "switchboard_call_duration_seconds",
            "Call latency as the server saw it, by door, RPC service and method, and agent.",
            ["door", "rpc_service", "rpc_method", "agent"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            "switchboard_time_to_first_token_seconds",
            "From the start of a streamed call to its first text or tool-call event.",
            ["agent"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "switchboard_tokens",
            "Tokens used, by agent, tenant and direction (input or output).",
            ["agent", "tenant", "direction"],
            registry=r,
        )
        self.streams_in_flight = Gauge(
            "switchboard_streams_in_flight",
            "Streamed calls being served now, by RPC service and method.",
            ["rpc_service", "rpc_method"],
            registry=r,
            multiprocess_mode="livesum",  # serve --workers: the sum over live workers
        )
        self.upstream_calls = Counter(
            "switchboard_upstream_calls",
            "Model calls to upstream targets, by target and outcome "
            "(ok, cancelled, or the error kind).",
            ["target", "outcome"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "switchboard_upstream_duration_seconds",
            "Upstream model call duration, by target.",
            ["target"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ratelimit_refusals = Counter(
            "switchboard_ratelimit_refusals",
            "Calls refused by a rate limit, by limit.",
            ["limit"],
            registry=r,
        )
        self.ratelimit_backend_errors = Counter(
            "switchboard_ratelimit_backend_errors",
            "Rate-limit backend failures (the call was let through or refused per on_error).",
            registry=r,
        )
        self.ratelimit_backend_up = Gauge(
            "switchboard_ratelimit_backend_up",
            "1 while the rate-limit backend answers, 0 while it fails.",
            registry=r,
            multiprocess_mode="livemin",  # serve --workers: 0 if any live worker sees it down
        )
        self.ratelimit_backend_up.set(1)
        self.breaker_state = Gauge(
            "switchboard_target_breaker_state",
            "Each target's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["target"],
            registry=r,
        )
        self.cost_usd = Counter(
            "switchboard_cost_usd",
            "Money charged, in US dollars, by tenant, agent and model: every ledger line, "
            "failed and cut-short calls included.",
            ["tenant", "agent", "model"],
            registry=r,
        )
        self.budget_limit_usd = Gauge(
            "switchboard_budget_limit_usd",
            "Each configured budget's limit in US dollars per period (tenant '*': each tenant).",
            ["budget", "tenant", "period", "per_key"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.budgets_changed(budgets)
        self._children: dict[tuple[str, ...], _Children] = {}
        self._cost_children: dict[tuple[str, str, str], Counter] = {}
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None

    def agent_label(self, agent: str) -> str:
        return agent if agent in self._known_agents() else UNKNOWN

    # The observe layer's sink ------------------------------------------------------------

    def charged(self, line: UsageRecord) -> None:
        """Count a ledger line's cost (the ledger's ``on_recorded``)."""
        key = (line.tenant, self.agent_label(line.agent), line.model)
        child = self._cost_children.get(key)
        if child is None:  # as for the call metrics: the label lookup once per label set
            child = self._cost_children[key] = self.cost_usd.labels(*key)
        child.inc(line.cost_nanos / 1e9)

    def budgets_changed(self, budgets: Iterable[BudgetConfig]) -> None:
        """Publish the budgets of a (new) config as ``switchboard_budget_limit_usd``."""
        self.budget_limit_usd.clear()
        for b in budgets:
            labels = (b.name, b.tenant, b.period, "true" if b.per_key else "false")
            self.budget_limit_usd.labels(*labels).set(b.limit_usd)

    def started(self, record: CallRecord) -> None:
        if record.method.response_streaming:
            m = record.method
            self.streams_in_flight.labels(m.service, m.short_name).inc()

    def finished(self, record: CallRecord) -> None:
        m = record.method
        agent = self.agent_label(record.agent) if record.agent else ""
        if m.response_streaming:
            self.streams_in_flight.labels(m.service, m.short_name).dec()
        key = (m.door, m.service, m.short_name, agent, record.tenant, record.code.name)
        children = self._children.get(key)
        if children is None:
            # Label lookups lock and validate: do them once per label set, not per call.
            children = self._children[key] = _Children(
                calls=self.calls.labels(*key),
                seconds=self.call_seconds.labels(*key[:4]),
                ttft=self.ttft_seconds.labels(agent),
                tokens_in=self.tokens.labels(agent, record.tenant, "input"),
                tokens_out=self.tokens.labels(agent, record.tenant, "output"),
            )
        children.calls.inc()
        children.seconds.observe(record.duration_s)
        if record.first_token_s is not None:
            children.ttft.observe(record.first_token_s)
        if record.input_tokens:
            children.tokens_in.inc(record.input_tokens)
        if record.output_tokens:
            children.tokens_out.inc(record.output_tokens)

    # Exposition ---------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP on a background thread (prometheus_client's own server:
        IPv4 or IPv6 as ``host`` says, no access log); returns the bound port.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server, self._thread = start_http_server(port, host, registry=self.registry)
        bound = int(self._server.server_port)
        log.info("metrics served", extra={"metrics_host": host, "metrics_port": bound})
        return bound

    def close(self) -> None:
        """Stop serving and release the port. Blocks up to half a second (the server's poll
        interval): call it off the event loop."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
