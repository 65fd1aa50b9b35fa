"""The composition root: builds every component from a config snapshot and wires them.

Nothing else constructs long-lived components. Shutdown runs in the documented order:
health NOT_SERVING, stop accepting calls and let in-flight ones finish within the grace
period, then close providers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from switchboard.v1 import agent_pb2, agent_pb2_grpc

from service.agents.runner import Runner, Runtime
from service.api.servicer import AgentServicer
from service.config import Snapshot
from service.providers.base import Provider
from service.providers.registry import build_provider
from service.routing.breaker import OPEN, redis_storage
from service.routing.registry import TargetRegistry
from service.routing.router import Router

log = logging.getLogger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
TARGET_HEALTH_PREFIX = "switchboard.target."


def build_runtime(
    snapshot: Snapshot, providers: Mapping[str, Provider], targets: TargetRegistry
) -> Runtime:
    """The runtime for ``snapshot``. ``targets`` (breakers, budgets) outlives it: on reload
    pass the same registry, and it keeps its state under the new settings."""
    targets.configure(snapshot.resilience, snapshot.targets)
    return Runtime(snapshot=snapshot, router=Router(providers, targets))


class App:
    """One server process: the gRPC server, its services, and the providers behind them."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.providers: dict[str, Provider] = {
            name: build_provider(target) for name, target in snapshot.targets.items()
        }
        # Per-target breaker states, published as health services by an owned task.
        self._target_states: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        storage, self._close_storage = None, None
        if snapshot.resilience.redis is not None:
            storage, self._close_storage = redis_storage(snapshot.resilience.redis)
        self.targets = TargetRegistry(snapshot.resilience, storage=storage)
        self.targets.subscribe(lambda name, state: self._target_states.put_nowait((name, state)))
        self._target_health: asyncio.Task[None] | None = None
        self._runtime = build_runtime(snapshot, self.providers, self.targets)
        self.runner = Runner(lambda: self._runtime)
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
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(self.runner), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.reflection:
            reflection.enable_server_reflection(
                (AGENT_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
            )
        return server

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Bind and start serving; returns the bound port (useful with port 0).

        Raises:
            RuntimeError: the address cannot be bound.
        """
        settings = self.snapshot.server
        address = f"{host or settings.host}:{settings.port if port is None else port}"
        self.port = self.server.add_insecure_port(address)
        await self.server.start()
        for service in ("", AGENT_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._target_health = asyncio.create_task(self._publish_target_health())
        log.info("serving", extra={"address": address, "port": self.port})
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain and stop: NOT_SERVING at once, new calls refused (UNAVAILABLE), in-flight
        calls given ``grace_s`` (default from config) to finish, then providers closed."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.snapshot.server.grace_s if grace_s is None else grace_s
        log.info("draining", extra={"grace_s": grace})
        await self.health.enter_graceful_shutdown()
        if self._target_health is not None:
            self._target_health.cancel()
            await asyncio.wait([self._target_health])
        await self.server.stop(grace)
        for provider in self.providers.values():
            await provider.aclose()
        if self._close_storage is not None:
            self._close_storage()
        log.info("stopped")

    async def _publish_target_health(self) -> None:
        """Mirror each target's breaker in health as ``switchboard.target.<name>``: an open
        circuit is NOT_SERVING, closed or half-open SERVING. Runs until stop() cancels it."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            name, state = await self._target_states.get()
            status = not_serving if state == OPEN else serving
            await self.health.set(TARGET_HEALTH_PREFIX + name, status)
