"""The interceptor chain's CPU cost per call, without the network.

Calls the composed method handler directly, with a trivial servicer and a stand-in servicer
context, and prints CPU microseconds per call for: nothing, OpenTelemetry's aio server
interceptor alone, our tracing layer alone, the whole chain (auth on, three rate limits on
the memory backend), and the aio interceptor in front of the rest of the chain.

    PYTHONPATH=. .venv/bin/python bench/chain_micro.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from switchboard.v1 import agent_pb2 as pb

from service.app import App
from service.auth.keys import new_key, write_keys_file
from service.config import load
from service.interceptors.auth import AuthLayer
from service.interceptors.chain import Chain, build_interceptors
from service.interceptors.context import ContextLayer
from service.interceptors.observe import ObserveLayer
from service.interceptors.rate_limit import RateLimitLayer
from service.interceptors.tracing import TracingLayer
from service.observability.faults import FaultLog
from service.observability.logging import CallLog

CALLS = 20_000
Metadatum = namedtuple("Metadatum", ["key", "value"])  # what grpc.aio hands servicers
REQUEST = pb.InvokeRequest(
    agent="echo",
    messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello there")])],
)
RESPONSE = pb.InvokeResponse(agent="echo")


class Context:
    def __init__(self, metadata: tuple[Any, ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata

    def code(self) -> None:
        return None

    def time_remaining(self) -> float:
        return 10.0

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5555"


class Details:
    method = "/switchboard.v1.AgentService/Invoke"
    invocation_metadata = ()


async def servicer(_request: Any, _context: Any) -> pb.InvokeResponse:
    return RESPONSE


async def measure(interceptors: list[Any], metadata: tuple[Any, ...]) -> float:
    handler = grpc.unary_unary_rpc_method_handler(servicer)

    def link(i: int) -> Any:
        if i == len(interceptors):

            async def last(_details: Any) -> Any:
                return handler

            return last
        following = link(i + 1)

        async def step(details: Any) -> Any:
            return await interceptors[i].intercept_service(following, details)

        return step

    first, context = link(0), Context(metadata)
    for _ in range(500):
        await (await first(Details())).unary_unary(REQUEST, context)
    started = time.process_time()
    for _ in range(CALLS):
        await (await first(Details())).unary_unary(REQUEST, context)
    return (time.process_time() - started) / CALLS * 1e6


async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    key, record = new_key("acme")
    write_keys_file(folder / "keys.yaml", [record])
    config = folder / "switchboard.yaml"
    config.write_text(
        "auth: {keys_file: keys.yaml}\n"
        "rate_limits:\n"
        "  tenant: {requests_per_min: 100000000, tokens_per_min: 1000000000}\n"
        "  key: {requests_per_min: 100000000}\n"
        "targets: {e: {provider: mock, model: echo}}\n"
        "agents: {echo: {route: [e]}}\n"
    )
    app = App(load(config, {}))
    metadata = (Metadatum("authorization", f"Bearer {key}"), Metadatum("user-agent", "bench"))

    def auth() -> Any:
        return app.snapshot.auth

    def rest() -> list[Any]:
        return [
            ContextLayer(),
            ObserveLayer([app.metrics, CallLog()]),
            AuthLayer(auth),
            RateLimitLayer(app.limiter, auth, lambda: 120.0),
        ]

    variants = {
        "nothing": list,
        "otel aio interceptor alone": lambda: [
            aio_server_interceptor(tracer_provider=app.tracer_provider)
        ],
        "our tracing layer alone": lambda: [Chain([TracingLayer(app.tracer_provider)])],
        "whole chain (auth, 3 limits)": lambda: build_interceptors(
            tracer_provider=app.tracer_provider,
            auth=auth,
            limiter=app.limiter,
            sinks=[app.metrics, CallLog()],
            default_deadline_s=lambda: 120.0,
            faults=FaultLog(),
        ),
        "otel interceptor + the rest": lambda: [
            aio_server_interceptor(tracer_provider=app.tracer_provider),
            Chain(rest()),
        ],
    }
    for name, build in variants.items():
        runs = sorted([await measure(build(), metadata) for _ in range(3)])
        print(f"{name:32s} {runs[1]:7.1f} us/call (CPU, median of 3)")


if __name__ == "__main__":
    asyncio.run(main())
