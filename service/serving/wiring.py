"""Where the servicers meet the transports: each ``switchboard.v1`` service added to the gRPC
server (and named to reflection), the same servicers behind the HTTP doors wrapped in the
same chain, whether an address may be served without auth, and why one cannot be bound.

The composition root (:mod:`service.app`) builds the servicers; this module only plugs them
in, so adding a service is one entry in :data:`SERVICES`.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    agent_pb2,
    agent_pb2_grpc,
    approval_pb2,
    approval_pb2_grpc,
    run_pb2,
    run_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
    usage_pb2,
    usage_pb2_grpc,
)

from service.agents.spec import AgentSpec
from service.api import reflection
from service.api.servicer import AgentServicer
from service.config import ConfigError
from service.config.chain_model import is_loopback
from service.config.model import ServerConfig
from service.http.anthropic_door import AnthropicDoor
from service.http.app import HttpApp
from service.http.connect import service_app
from service.http.console import Console
from service.http.door import Behaviors
from service.http.openai_door import OpenAIDoor
from service.http.server import HttpListener
from service.interceptors.base import StreamBehavior, UnaryBehavior
from service.interceptors.chain import Chain
from service.serving.tls import ServerTls

log = logging.getLogger("service.app")  # the operator's lines keep their logger name

# Each service: its file's descriptor module and the generated function that adds a servicer.
SERVICES: Mapping[str, tuple[Any, Callable[[Any, grpc.aio.Server], None]]] = {
    "AgentService": (agent_pb2, agent_pb2_grpc.add_AgentServiceServicer_to_server),
    "SessionService": (session_pb2, session_pb2_grpc.add_SessionServiceServicer_to_server),
    "UsageService": (usage_pb2, usage_pb2_grpc.add_UsageServiceServicer_to_server),
    "AdminService": (admin_pb2, admin_pb2_grpc.add_AdminServiceServicer_to_server),
    "ApprovalService": (approval_pb2, approval_pb2_grpc.add_ApprovalServiceServicer_to_server),
    "RunService": (run_pb2, run_pb2_grpc.add_RunServiceServicer_to_server),
}


def full_name(service: str) -> str:
    """``service``'s full name, e.g. ``switchboard.v1.AgentService``."""
    module, _ = SERVICES[service]
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


AGENT_SERVICE = full_name("AgentService")
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

Served = list[tuple[ServiceDescriptor, object]]


def add_services(
    server: grpc.aio.Server,
    servicers: Mapping[str, object],
    health: health_pb2_grpc.HealthServicer,
    *,
    reflect: bool,
) -> Served:
    """Add ``servicers`` (by service name, each a key of :data:`SERVICES`) and ``health`` to
    ``server``, and reflection naming them all when ``reflect``; returns each service's
    descriptor and servicer, for the HTTP doors (:func:`build_http`)."""
    served: Served = []
    generic: Any = _GenericOnly(server)  # what the generated functions call, duck-typed
    for service, servicer in servicers.items():
        module, add = SERVICES[service]
        add(servicer, generic)
        served.append((module.DESCRIPTOR.services_by_name[service], servicer))
    health_pb2_grpc.add_HealthServicer_to_server(health, generic)
    if reflect:
        names = [descriptor.full_name for descriptor, _ in served]
        reflection.enable((*names, HEALTH_SERVICE), server)
    return served


class _GenericOnly:
    """``server`` as the generated ``add_*_to_server`` functions see it: they add each
    service's generic handler (``add_generic_rpc_handlers``) and register its methods again
    (``add_registered_method_handlers``, grpcio 1.63 and later); only the first reaches the
    server.

    grpc.aio's server keeps one request task per registered method and, for every call that
    arrives, waits on all of them (``asyncio.wait(..., FIRST_COMPLETED)``): with the 28
    methods served here that was about 5 % of the gateway's CPU per call (py-spy, the mock
    path at 16 calls in flight). Through the generic handlers one task takes every call
    and the handler is found by name; a bare grpc.aio server answered as many calls per
    CPU-second either way (docs/benchmarks.md).
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(
        self, handlers: tuple[grpc.GenericRpcHandler[Any, Any], ...]
    ) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Not passed on (see the class): the generic handler serves these methods."""


def build_http(
    chain: Chain,
    agents: AgentServicer,
    served: Served,
    agent_named: Callable[[str], AgentSpec | None],
) -> HttpApp:
    """The HTTP doors: the OpenAI and Anthropic doors over ``agents``, Connect over every
    service in ``served``, and the console; every call through ``chain``, labelled by door."""
    name = f"/{AGENT_SERVICE}/"

    def behaviors(door: str) -> Behaviors:
        return Behaviors(
            invoke=chain.unary_behavior(name + "Invoke", agents.Invoke, door),
            stream=chain.stream_behavior(name + "Stream", agents.Stream, door),
            list_agents=chain.unary_behavior(name + "ListAgents", agents.ListAgents, door),
            get_agent=chain.unary_behavior(name + "GetAgent", agents.GetAgent, door),
        )

    connect = [
        service_app(
            descriptor,
            unary=functools.partial(_wrapped_unary, chain, servicer),
            stream=functools.partial(_wrapped_stream, chain, servicer),
        )
        for descriptor, servicer in served
    ]
    return HttpApp(
        OpenAIDoor(behaviors("openai")),
        AnthropicDoor(behaviors("anthropic"), agent_named),
        connect,
        Console(),
    )


def _wrapped_unary(chain: Chain, servicer: object, name: str, door: str) -> UnaryBehavior:
    """The servicer's method for the RPC ``name`` ("/pkg.Service/Method") in the chain, as
    called through ``door``."""
    method: UnaryBehavior = getattr(servicer, name.rpartition("/")[2])
    return chain.unary_behavior(name, method, door)


def _wrapped_stream(chain: Chain, servicer: object, name: str, door: str) -> StreamBehavior:
    method: StreamBehavior = getattr(servicer, name.rpartition("/")[2])
    return chain.stream_behavior(name, method, door)


def check_open(auth_enabled: bool, host: str, keys: int, *, warn: bool = True) -> None:
    """Refuse to serve ``host`` without auth unless it is loopback; say loudly (once:
    ``warn``) when auth is off, or on with no ``keys``.

    Raises:
        ConfigError: auth is off and ``host`` is not a loopback address.
    """
    if auth_enabled:
        if warn and not keys:
            log.warning("auth is on but no API keys are configured: every call will fail")
        return
    if not is_loopback(host):
        raise ConfigError(f"auth.enabled: auth may be off only on a loopback address, not {host!r}")
    if warn:
        log.warning("auth is OFF: any local process can call every agent", extra={"host": host})


async def start_http(
    listener: HttpListener,
    settings: ServerConfig,
    grpc_host: str,
    port: int | None,
    *,
    check: Callable[[str], None],
) -> int | None:
    """Serve the HTTP doors on ``settings.http`` (``port`` overrides its port; with neither,
    there is no HTTP listener): the bound port, or None. ``check(host)`` refuses a host the
    doors may not be served on (auth off beyond loopback) by raising ConfigError.

    Raises:
        ConfigError: the address cannot be bound, or ``check`` refused it.
    """
    port = settings.http.port if port is None else port
    if port is None:
        return None
    host = settings.http.host or grpc_host
    check(host)
    try:
        bound = await listener.start(host, port, grace_s=settings.grace_s)
    except OSError as exc:
        raise ConfigError(
            f"server.http: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    log.info("serving HTTP", extra={"event": "start", "address": f"{host}:{bound}"})
    return bound


def bind_grpc(
    server: grpc.aio.Server, host: str, port: int, tls: ServerTls | None, *, shared: bool
) -> int:
    """Add ``host:port`` to ``server`` (with ``tls``'s credentials when set); the bound port
    (port 0 picks a free one). ``shared``: a worker of ``serve --workers``, whose port is
    shared (SO_REUSEPORT), so it is not tried on a plain socket first.

    Raises:
        ConfigError: the address cannot be bound, in the OS's words (grpc would log its own
            error line and then say only "Failed to bind").
    """
    address = f"{host}:{port}"
    problem = None if shared or not port else bind_error(host, port)
    try:
        if problem is None and tls is not None:
            return server.add_secure_port(address, tls.grpc_credentials())
        if problem is None:
            return server.add_insecure_port(address)
    except RuntimeError:
        problem = bind_error(host, port) or "grpc could not bind it"
    raise ConfigError(f"server: cannot listen on {address}: {problem}")


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound, in the OS's words, or None when a plain socket can
    bind at least one of its addresses (grpc serves when one of them binds)."""
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        return exc.strerror or str(exc)
    problem = "no address to bind"
    for family, kind, proto, _, address in found:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            problem = exc.strerror or str(exc)
        else:
            return None
    return problem
