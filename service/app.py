"""The composition root: builds every component from a config snapshot and wires them.

Nothing else constructs long-lived components. Shutdown runs in the documented order:
health NOT_SERVING, stop accepting calls and let in-flight ones finish within the grace
period, then close providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from switchboard.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)

from service.agents.pipeline import StatePipeline
from service.agents.runner import Runner, Runtime
from service.api.servicer import AgentServicer
from service.api.sessions import SessionServicer
from service.api.usage import UsageServicer
from service.config import Snapshot
from service.idempotency import Idempotency
from service.providers.base import Provider
from service.providers.registry import build_provider
from service.routing.router import Router
from service.sessions import Sessions
from service.state import build_stores
from service.state.health import HEALTH_NAME as STATE_HEALTH
from service.state.health import healthy, watch

log = logging.getLogger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SESSION_SERVICE = session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name
USAGE_SERVICE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name


def build_runtime(snapshot: Snapshot, providers: Mapping[str, Provider]) -> Runtime:
    return Runtime(snapshot=snapshot, router=Router(providers))


class App:
    """One server process: the gRPC server, its services, and the providers behind them."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.providers: dict[str, Provider] = {
            name: build_provider(target) for name, target in snapshot.targets.items()
        }
        self._runtime = build_runtime(snapshot, self.providers)
        self.stores = build_stores(snapshot)
        self.pipeline = StatePipeline(
            self.stores,
            pricing=lambda: self._runtime.snapshot.pricing,
            budgets=lambda: self._runtime.snapshot.budgets,
            reservation_ttl_s=snapshot.state.reservation_ttl_s,
        )
        self.runner = Runner(lambda: self._runtime, self.pipeline)
        self._state_watch: asyncio.Task[None] | None = None
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.server = self._build_server(snapshot)
        self.port = 0
        self._stopped = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        return self._runtime.snapshot

    def _build_server(self, snapshot: Snapshot) -> grpc.aio.Server:
        settings = snapshot.server
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
                ("grpc.max_send_message_length", settings.max_send_message_bytes),
                # One process owns its port unless workers share it on purpose.
                ("grpc.so_reuseport", 0),
            ],
        )
        idempotency = Idempotency(self.stores.fast, ttl_s=snapshot.state.idempotency_ttl_s)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(
            AgentServicer(self.runner, idempotency), server
        )
        session_pb2_grpc.add_SessionServiceServicer_to_server(
            SessionServicer(Sessions(self.stores.durable), self.stores.durable), server
        )
        usage_pb2_grpc.add_UsageServiceServicer_to_server(
            UsageServicer(self.stores.durable), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (
                    AGENT_SERVICE,
                    SESSION_SERVICE,
                    USAGE_SERVICE,
                    HEALTH_SERVICE,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
        return server

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Bind and start serving; returns the bound port (useful with port 0).

        Raises:
            RuntimeError: the address cannot be bound.
            Unavailable: the state schema cannot be migrated (``state.migrate``).
        """
        if self.snapshot.state.migrate:
            await self.stores.durable.migrate()
        settings = self.snapshot.server
        address = f"{host or settings.host}:{settings.port if port is None else port}"
        self.port = self.server.add_insecure_port(address)
        await self.server.start()
        for service in ("", AGENT_SERVICE, SESSION_SERVICE, USAGE_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        state_ok = await healthy(self.stores)
        await self._report_state(state_ok)
        self._state_watch = asyncio.create_task(
            watch(
                self.stores,
                self._report_state,
                self.snapshot.state.health_interval_s,
                last=state_ok,
            )
        )
        log.info("serving", extra={"address": address, "port": self.port})
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and stop: NOT_SERVING at once, new calls refused (UNAVAILABLE), in-flight
        calls given ``grace_s`` (default from config) to finish, then providers and state
        stores closed."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.snapshot.server.grace_s if grace_s is None else grace_s
        log.info("draining", extra={"grace_s": grace})
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._state_watch is not None:
            self._state_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._state_watch
        for provider in self.providers.values():
            await provider.aclose()
        await self.stores.aclose()
        log.info("stopped")

    async def _report_state(self, healthy: bool) -> None:
        status = health_pb2.HealthCheckResponse
        await self.health.set(STATE_HEALTH, status.SERVING if healthy else status.NOT_SERVING)
