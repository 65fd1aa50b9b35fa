"""The composition root: builds every component from a config snapshot and wires them.

Nothing else constructs long-lived components. Shutdown runs in the documented order:
health NOT_SERVING, stop accepting calls and let in-flight ones finish within the grace
period, then close providers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, cast

import grpc
import httpx2
from grpc_health.v1 import health_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from service.agents.pipeline import StatePipeline
from service.agents.runner import Runner, Runtime
from service.agents.runs import KIND as AGENT_KIND
from service.agents.runs import AgentRuns
from service.agents.spec import AgentSpec
from service.api.admin import AdminServicer, target_infos
from service.api.admission import Admission
from service.api.approvals import ApprovalServicer
from service.api.runs import RunServicer
from service.api.servicer import AgentServicer
from service.api.sessions import SessionServicer
from service.api.usage import UsageServicer
from service.approvals.gate import Gate
from service.approvals.service import Approvals
from service.auth.admin import KeyAdmin
from service.auth.live import LiveKeys
from service.cache.metrics import CacheMetrics
from service.config import ConfigError, Snapshot
from service.errors import Unavailable
from service.guards.metrics import GuardMetrics
from service.http.cors import with_cors
from service.http.server import HttpListener
from service.idempotency import Idempotency
from service.interceptors.chain import Chain, build_chain
from service.interceptors.door_span import DoorSpanLayer
from service.observability.agent_span import AgentSpans
from service.observability.faults import FaultLog
from service.observability.logging import CallLog
from service.observability.metrics import Metrics
from service.observability.server_span import ServerSpan
from service.observability.tool_span import ToolSpans
from service.observability.traced_provider import TracedProvider
from service.observability.tracing import (
    build_tracer_provider,
    resolve_tracing,
    server_interceptor,
)
from service.providers.base import Provider
from service.providers.registry import build_provider
from service.ratelimit.limiter import build_limiter
from service.reload import Reloader, Runtimes
from service.routing.breaker import OPEN, STATE_VALUES, redis_storage
from service.routing.registry import TargetRegistry
from service.routing.router import Router
from service.runs.kinds import RunKinds
from service.runs.service import Runs
from service.serving.health import DrainingHealth, TargetHealth
from service.serving.options import server_options
from service.serving.tls import build_tls
from service.serving.wiring import (
    SERVICES,
    add_services,
    bind_grpc,
    build_http,
    check_open,
    full_name,
    start_http,
)
from service.sessions import Sessions
from service.state import build_stores, data_dir
from service.state.health import HEALTH_NAME as STATE_HEALTH
from service.state.health import healthy, watch
from service.state.outbox import Outbox
from service.tasks import stop as stop_task
from service.tools.host import ToolHost
from service.tools.loop import ToolLoop
from service.tools.metrics import ToolMetrics
from service.usage.ledger import Ledger
from service.workflows.wiring import build_workflows

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
# How long start() waits for MCP servers to list their tools (a slower one joins later).
TOOLS_READY_S = 30.0

RATELIMIT_HEALTH = "switchboard.ratelimit"  # health of the rate-limit backend


def build_runtime(
    snapshot: Snapshot, providers: Mapping[str, Provider], targets: TargetRegistry
) -> Runtime:
    """The runtime for ``snapshot``. ``targets`` (breakers, budgets) outlives it: on reload
    pass the same registry, and it keeps its state under the new settings."""
    targets.configure(snapshot.resilience, snapshot.targets)
    return Runtime(snapshot=snapshot, router=Router(providers, targets))


class App:
    """One server process: the gRPC server, its services, and the providers behind them."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        tracer_provider: TracerProvider | None = None,
        environ: Mapping[str, str] | None = None,
        worker: bool = False,
    ) -> None:
        """``tracer_provider``: given by tests (in-memory exporter); built from config if None.
        ``environ``: what reloads read overrides and secrets from (as ``load`` did).
        ``worker``: one of ``serve --workers N``: the port is shared (SO_REUSEPORT) and the
        supervisor, not this process, serves the metrics (of all workers)."""
        self._worker = worker
        self._names: tuple[Snapshot | None, frozenset[str]] = (None, frozenset())
        self._build_tracing(snapshot, tracer_provider, environ or {})
        self.metrics = Metrics(known_agents=self._callable_names, budgets=snapshot.budgets)
        tracer = self.tracer_provider.get_tracer("switchboard")
        # The model-call span is never made current (nothing reads its ids): when no span is
        # recorded, no span object per attempt.
        model_tracer = tracer if self.traced_calls else trace.NoOpTracer()
        # Health, and each target's breaker in it (published by an owned task).
        self.health = DrainingHealth()
        self.target_health = TargetHealth(self.health)
        storage, self._close_storage = None, None
        if snapshot.resilience.redis is not None:
            storage, self._close_storage = redis_storage(snapshot.resilience.redis)
        self.targets = TargetRegistry(snapshot.resilience, storage=storage)
        self.targets.subscribe(self._breaker_changed)
        self._target_health: asyncio.Task[None] | None = None
        # The runtime (snapshot, router, providers) is swapped whole on reload; the target
        # registry (breakers, budgets) and the state stores outlive every runtime.
        self.runtimes = Runtimes(
            snapshot,
            build_runtime=lambda snap, providers: build_runtime(snap, providers, self.targets),
            build_provider=lambda target: TracedProvider(
                build_provider(target), target, model_tracer, self.metrics
            ),
        )
        self.stores = build_stores(snapshot)
        # The config's keys plus the state store's (AdminService), refreshed by an owned task.
        self.live_keys = LiveKeys(self.stores.admin, lambda: self.snapshot.auth)
        self._keys_refresh: asyncio.Task[None] | None = None
        self.key_admin = KeyAdmin(
            self.stores.admin,
            agents=lambda: list(self.snapshot.agents),
            read_only_keys=self.live_keys.read_only,
            audit=self.stores.durable.audit,
            changed=self.live_keys.refresh,
        )
        # Ledger lines and audit entries: the durable store, or the local outbox when it fails.
        self.ledger = Ledger(
            self.stores.durable, Outbox(data_dir(snapshot), timeout_s=snapshot.state.timeout_s)
        )
        self.ledger.on_recorded = self.metrics.charged
        self.pipeline = StatePipeline(
            self.stores,
            pricing=lambda: self.snapshot.pricing,
            budgets=lambda: self.snapshot.budgets,
            reservation_ttl_s=snapshot.state.reservation_ttl_s,
            ledger=self.ledger,
            budget_rebuild_s=snapshot.state.budget_rebuild_s,
            on_cache_lookup=CacheMetrics(self.metrics.registry).observe,
        )
        # External guards' HTTP client: one pool for every call and reload, closed on stop.
        self.guard_http = httpx2.AsyncClient(follow_redirects=False)
        # Server tools: MCP servers (supervised) and HTTP tools; they outlive runtimes.
        self.tool_http = httpx2.AsyncClient(follow_redirects=False)
        self.tool_metrics = ToolMetrics(self.metrics.registry)
        self.tool_host = ToolHost(
            self.tool_http,
            on_change=self.tool_metrics.server_changed,
            on_rug_pull=self.tool_metrics.rug_pull,
        )
        self.tool_loop = ToolLoop(self.tool_host, audit=self.ledger, spans=ToolSpans(tracer))
        self.tool_loop.approvals = gate = Gate(
            self.stores.approvals, self.stores.runs, self.tool_loop
        )
        self.approvals = Approvals(
            self.stores.approvals,
            self.ledger,
            # A lambda: the runner is built below.
            arguments_problem=lambda *call: self.runner.tool_arguments_problem(*call),  # noqa: PLW0108
        )
        self.runner = Runner(
            self.runtimes.current,
            self.pipeline,
            guard_observer=GuardMetrics(self.metrics.registry),
            http=self.guard_http,
            tools=self.tool_loop,
            sessions=Sessions(self.stores.durable),
            traced=AgentSpans(tracer).traced if self.traced_calls else None,
        )
        self.runs = self._build_runs(gate)
        self.workflows = build_workflows(
            snapshot, lambda: self.snapshot, runner=self.runner, gate=gate, runs=self.runs,
            kinds=self.run_kinds,
        )  # fmt: skip
        self._host: str | None = None  # the address bound by start()
        self.reloader = Reloader(
            self.runtimes,
            environ or {},
            registry=self.metrics.registry,
            accept=self._accept_reload,
            swapped=self._swapped,
        )
        self._state_watch: asyncio.Task[None] | None = None
        self.limiter = build_limiter(
            snapshot.rate_limits,
            on_refusal=lambda limit: self.metrics.ratelimit_refusals.labels(limit).inc(),
            on_backend_error=self.metrics.ratelimit_backend_errors.inc,
            on_state=self._ratelimit_state,
        )
        self.admission = Admission(
            max_in_flight=lambda: self.snapshot.transport.max_concurrent_calls
        )
        self.tls = build_tls(snapshot, self.metrics.registry)
        self._tls_watch: asyncio.Task[None] | None = None
        self.server = self._build_server(snapshot)
        self.http = HttpListener(
            with_cors(
                build_http(self.chain, self.agent_servicer, self._served, self._agent_named),
                snapshot.server.http.cors,
            ),
            reuse_port=self._worker,
            tls=None if self.tls is None else self.tls.ssl_context(),
        )
        self.port = 0
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self._stopped = asyncio.Event()
        self._reloading: asyncio.Task[None] | None = None

    def _build_tracing(
        self, snapshot: Snapshot, provider: TracerProvider | None, environ: Mapping[str, str]
    ) -> None:
        """Resolve the tracing settings (config and OTEL_* variables) and the provider.
        Raises ConfigError: an OTEL_* variable or tracing key cannot be used."""
        self._owns_tracer_provider = provider is None
        self.tracing = resolve_tracing(snapshot.observability.tracing, environ)
        self.tracer_provider = provider or build_tracer_provider(self.tracing)
        # Without an exporter nothing is sampled: no per-call span objects (issue 17).
        self.traced_calls = provider is not None or self.tracing.exporter != "none"

    async def _swapped(self, snapshot: Snapshot) -> None:
        """What follows a reload's new snapshot: the tool sources, the budgets' metric."""
        self.metrics.budgets_changed(snapshot.budgets)
        await self.tool_host.configure(snapshot.tools)

    @property
    def snapshot(self) -> Snapshot:
        return self.runtimes.current().snapshot

    @property
    def providers(self) -> Mapping[str, Provider]:
        """The current providers by target name (replaced on reload), without their tracing."""
        return {
            name: cast(TracedProvider, provider).inner
            for name, provider in self.runtimes.providers.items()
        }

    async def reload(self) -> bool:
        """Reload the config file now; False when it is invalid (the old one stays)."""
        return await self.reloader.reload()

    def _build_server(self, snapshot: Snapshot) -> grpc.aio.Server:
        settings = snapshot.server
        # One chain and one servicer for every door (gRPC here, HTTP in _build_http).
        traced = self.traced_calls
        self.chain: Chain = build_chain(
            tracing=server_interceptor(self.tracer_provider, self.tracing) if traced else None,
            http_tracing=DoorSpanLayer(self.tracer_provider) if traced else None,
            trace_ids=None if traced else self.tracer_provider,
            auth=self.live_keys.policy,
            auth_catch_up=self.live_keys.catch_up,
            limiter=self.limiter,
            sinks=[self.metrics, CallLog(snapshot.observability.logs.calls)],
            every_call=[ServerSpan()],
            default_deadline_s=self.runner.default_deadline_s,
            faults=FaultLog(),
            agent=self._agent_named,
        )
        server = grpc.aio.server(
            interceptors=[self.chain],
            options=server_options(settings, snapshot.transport, reuse_port=self._worker),
        )
        idempotency = Idempotency(self.stores.idempotency, ttl_s=snapshot.state.idempotency_ttl_s)
        self.agent_servicer = AgentServicer(
            self.runner, self.admission, idempotency, self.workflows, runs=self.runs
        )
        sessions = SessionServicer(Sessions(self.stores.durable), self.ledger)
        admin = AdminServicer(
            self.key_admin,
            self.stores.admin,
            lambda: target_infos(self.snapshot.targets, self.targets),
        )
        servicers = {
            "AgentService": self.agent_servicer,
            "SessionService": sessions,
            "UsageService": UsageServicer(self.stores.durable),
            "AdminService": admin,
            "ApprovalService": ApprovalServicer(self.approvals),
            "RunService": RunServicer(self.runs, self.runner.default_deadline_s()),
        }
        # What the HTTP doors serve: the same servicers, wrapped in the same chain.
        self._served = add_services(server, servicers, self.health, reflect=settings.reflection)
        return server

    def _build_runs(self, gate: Gate) -> Runs:
        """Runs by kind (service.runs.kinds): agent tool loops here; workflows may register
        theirs on ``self.run_kinds``."""
        self.run_kinds = RunKinds()
        self.run_kinds.register(AGENT_KIND, AgentRuns(self.runner, gate, self.stores.runs).kind())
        return Runs(self.stores.runs, self.run_kinds)

    async def start(
        self, host: str | None = None, port: int | None = None, http_port: int | None = None
    ) -> int:
        """Bind and start serving; returns the bound port (useful with port 0).

        Raises:
            ConfigError: the address or the metrics port cannot be bound, or auth is off on
                a non-loopback address.
            Unavailable: the state schema cannot be migrated (``state.migrate``).
        """
        if self.snapshot.state.migrate:
            await self.stores.durable.migrate()
        self.ledger.start()  # replays what an earlier run left in the outbox
        self.pipeline.budgets.start()  # watches for lost budget counters
        try:
            await self.live_keys.refresh()
        except Unavailable as exc:
            log.warning("cannot read API keys from the state store yet: %s", exc.message)
        await self.tool_host.configure(self.snapshot.tools, wait_s=TOOLS_READY_S)
        if self.workflows is not None:
            # Launches DBOS, which resumes the runs this executor left unfinished.
            await self.workflows.engine.start()
        settings = self.snapshot.server
        host = host or settings.host
        self._check_auth(self.snapshot, host)
        self._host = host
        bound = settings.port if port is None else port
        address = f"{host}:{bound}"
        self.port = bind_grpc(self.server, host, bound, self.tls, shared=self._worker)
        metrics = self.snapshot.observability.metrics
        if metrics.port is not None and not self._worker:
            try:
                self.metrics_port = self.metrics.serve(metrics.host, metrics.port)
            except OSError as exc:
                raise ConfigError(
                    f"observability.metrics: cannot listen on {metrics.host}:{metrics.port}: "
                    f"{exc.strerror}"
                ) from exc
        await self.server.start()
        self.http_port = await start_http(
            self.http, self.snapshot.server, host, http_port,
            check=lambda h: self._check_auth(self.snapshot, h, warn=False),  # start() warned
        )  # fmt: skip
        # Every service served (ApprovalService and RunService were once left out: UNKNOWN).
        for service in ("", *(full_name(s) for s in SERVICES), RATELIMIT_HEALTH):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._target_health = asyncio.create_task(self.target_health.run())
        state_ok = await healthy(self.stores)
        await self.health.report(STATE_HEALTH, state_ok)
        self._state_watch = asyncio.create_task(
            watch(
                self.stores,
                functools.partial(self.health.report, STATE_HEALTH),
                self.snapshot.state.health_interval_s,
                last=state_ok,
            )
        )
        self._reloading = asyncio.create_task(self.reloader.run(), name="config-reload")
        if self.tls is not None:
            self._tls_watch = asyncio.create_task(
                self.tls.watch(lambda: self.snapshot.reload.poll_interval_s), name="tls-reload"
            )
        self._keys_refresh = asyncio.create_task(
            self.live_keys.run(lambda: self.snapshot.auth.refresh_interval_s), name="keys"
        )
        log.info(
            "serving",
            extra={
                "event": "start",
                "address": address,
                "port": self.port,
                "tls": "off" if self.tls is None else "mtls" if self.tls.mutual else "tls",
            },
        )
        return self.port

    def _callable_names(self) -> Container[str]:
        """What a call may name now: agents and workflows (metrics label by them); built once
        per config snapshot."""
        snapshot = self.snapshot
        if self._names[0] is not snapshot:
            self._names = (snapshot, frozenset(snapshot.agents) | frozenset(snapshot.workflows))
        return self._names[1]

    def _agent_named(self, name: str) -> AgentSpec | None:
        """The agent ``name`` of the current config (read per call: reloads swap it)."""
        return self.snapshot.agents.get(name)

    def _accept_reload(self, snapshot: Snapshot) -> None:
        """A reload may not turn auth off on the address this server is bound to (the new
        file's ``server.host`` only applies on restart, and ``--host`` may override it); nor
        add the first workflow to a server started without any (DBOS starts with the server).

        Raises:
            ConfigError: what to change, or that a restart is needed.
        """
        if self._host is not None:
            self._check_auth(snapshot, self._host)
        if snapshot.workflows and self.workflows is None:
            raise ConfigError(
                "workflows: this server started without workflows; adding the first one "
                "needs a restart (their durable store starts with the server)"
            )

    def _check_auth(self, snapshot: Snapshot, host: str, *, warn: bool = True) -> None:
        """Raises ConfigError: auth is off and ``host`` is not loopback (see check_open)."""
        check_open(snapshot.auth.enabled, host, len(self.live_keys.policy().keys), warn=warn)

    async def _ratelimit_state(self, up: bool) -> None:
        self.metrics.ratelimit_backend_up.set(1 if up else 0)
        await self.health.report(RATELIMIT_HEALTH, up)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and stop: health NOT_SERVING and new agent calls refused (UNAVAILABLE) at
        once; calls in flight get ``grace_s`` (default: ``server.grace_s``) to finish and are
        cancelled after it; then the transport stops and providers and state stores are
        closed. Reloading stops first: a drain ends on the config it began with."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.snapshot.server.grace_s if grace_s is None else grace_s
        deadline = asyncio.get_running_loop().time() + grace
        log.info("draining", extra={"grace_s": grace, "in_flight": self.admission.in_flight})
        await self.health.enter_graceful_shutdown()
        # Cancelled until they end (service.tasks.stop); a cancellation of stop() itself is
        # not swallowed.
        for task in (self._reloading, self._target_health, self._tls_watch, self._keys_refresh):
            await stop_task(task)
        if self.workflows is not None:
            self.workflows.stopping = True  # runs cut off now stay resumable
        drained = await self.admission.drain(grace)
        if not drained:
            log.warning("grace period over: cancelling calls still in flight")
        # Health watchers would hold server.stop for the rest of the grace period: the agent
        # calls are done (or out of time), so their last NOT_SERVING ends them now.
        self.health.end_watches()
        # Anything else still open gets what is left of the grace period.
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        await asyncio.gather(self.server.stop(left), self.http.stop(left))
        await stop_task(self._state_watch)
        # Calls cancelled past the grace still record what they cost: the stores close only
        # after the last of those writes (bounded: each store call is).
        settle_s = 3 * self.snapshot.state.timeout_s
        await self.admission.drain(settle_s)
        if not await self.pipeline.recorder.drain(settle_s):
            log.error(
                "ledger writes still under way at shutdown: %d", self.pipeline.recorder.in_flight
            )
        if self.workflows is not None:
            # Runs still executing here (resumed ones have no call to drain) stop without a
            # checkpoint for the step in flight: a restart or a replica resumes them.
            await self.workflows.halt()
            await self.workflows.engine.stop()
        if self._close_storage is not None:
            self._close_storage()
        for aclose in (
            self.runtimes.aclose, self.limiter.aclose, self.guard_http.aclose,
            self.tool_host.aclose, self.tool_http.aclose, self.pipeline.budgets.aclose,
            self.ledger.aclose, self.stores.aclose,
        ):  # fmt: skip
            await aclose()
        await asyncio.to_thread(self.metrics.close)  # waits for the server's thread
        if self._owns_tracer_provider:
            # Flushing exports synchronously: off the event loop, so it does not stall it.
            await asyncio.to_thread(self.tracer_provider.shutdown)
        log.info("stopped", extra={"event": "stop"})

    def _breaker_changed(self, target: str, state: str) -> None:
        self.metrics.breaker_state.labels(target).set(STATE_VALUES[state])
        self.target_health.changed(target, is_open=state == OPEN)
