"""The interceptor chain's CPU cost per call, without the network.

Calls the composed method handler directly, as grpc.aio would (``intercept_service`` per
call, then the behavior), with a trivial servicer and a stand-in servicer context, and
prints CPU microseconds per call for: nothing; opentelemetry-instrumentation-grpc's aio
server interceptor alone; the whole chain as the app builds it (auth on, three rate limits
on the memory backend), with spans not sampled (no exporter: the default) and sampled
(recorded, then dropped); and a streamed call of 20 events through the whole chain. The call
log is on, as ``switchboard serve`` sets it up (JSON lines, here to /dev/null, line-buffered
as stderr is), and the loop turns once between calls, as it does between a server's calls
(the call log writes a turn's lines at the start of the next).

It measures whichever source tree it runs in, so two trees compare by running it in each
(``cd <tree> && PYTHONPATH=.:generated:clients/python python bench/chain_micro.py``),
alternating, with the same interpreter:

    PYTHONPATH=. .venv/bin/python bench/chain_micro.py --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import time
from collections import namedtuple
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from switchboard.v1 import agent_pb2 as pb

from service.app import App
from service.auth.keys import new_key, write_keys_file
from service.config import load
from service.config.chain_model import LogsConfig
from service.observability.logging import configure

CALLS = 10_000
EVENTS = 20
Metadatum = namedtuple("Metadatum", ["key", "value"])  # what grpc.aio hands servicers
REQUEST = pb.InvokeRequest(
    agent="echo",
    messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello there")])],
)
STREAM_REQUEST = pb.StreamRequest(agent="echo", messages=REQUEST.messages)
RESPONSE = pb.InvokeResponse(agent="echo")
DELTA = pb.StreamResponse(text_delta=pb.TextDelta(text="word "))


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
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class Dropped(SpanProcessor):
    """Spans are recorded (attributes, events, end) and then dropped: no export cost."""


async def servicer(_request: Any, _context: Any) -> pb.InvokeResponse:
    return RESPONSE


async def stream_servicer(_request: Any, _context: Any) -> AsyncIterator[pb.StreamResponse]:
    for _ in range(EVENTS):
        yield DELTA


async def measure(interceptors: list[Any], metadata: tuple[Any, ...], stream: bool) -> float:
    if stream:
        handler = grpc.unary_stream_rpc_method_handler(stream_servicer)
        method, request = "/switchboard.v1.AgentService/Stream", STREAM_REQUEST
    else:
        handler = grpc.unary_unary_rpc_method_handler(servicer)
        method, request = "/switchboard.v1.AgentService/Invoke", REQUEST

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

    async def once() -> None:
        composed = await first(Details(method))
        if stream:
            async for _ in composed.unary_stream(request, context):
                pass
        else:
            await composed.unary_unary(request, context)
        await asyncio.sleep(0)

    for _ in range(300):
        await once()
    started = time.process_time()
    for _ in range(CALLS):
        await once()
    return (time.process_time() - started) / CALLS * 1e6


def app(folder: Path, key_record: Any, tracer_provider: TracerProvider | None) -> App:
    write_keys_file(folder / "keys.yaml", [key_record])
    config = folder / "switchboard.yaml"
    config.write_text(
        "auth: {keys_file: keys.yaml}\n"
        "rate_limits:\n"
        "  tenant: {requests_per_min: 100000000, tokens_per_min: 1000000000}\n"
        "  key: {requests_per_min: 100000000}\n"
        "targets: {e: {provider: mock, model: echo}}\n"
        "agents: {echo: {route: [e]}}\n"
    )
    return App(load(config, {}), tracer_provider=tracer_provider)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant (median)")
    args = parser.parse_args()
    configure(LogsConfig(level="INFO", format="json"))
    with open(os.devnull, "w", buffering=1) as devnull:
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(devnull)
        await measure_all(args.rounds)


async def measure_all(rounds: int) -> None:
    folder = Path(tempfile.mkdtemp())
    key, record = new_key("acme")
    recording = TracerProvider(sampler=ALWAYS_ON)
    recording.add_span_processor(Dropped())
    quiet, sampled = app(folder, record, None), app(folder, record, recording)
    metadata = (Metadatum("authorization", f"Bearer {key}"), Metadatum("user-agent", "bench"))
    variants = {
        "nothing": (list, False),
        "otel aio interceptor alone": (
            lambda: [aio_server_interceptor(tracer_provider=quiet.tracer_provider)],
            False,
        ),
        "whole chain, spans not sampled": (lambda: [quiet.chain], False),
        "whole chain, spans recorded": (lambda: [sampled.chain], False),
        f"whole chain, a stream of {EVENTS} events": (lambda: [quiet.chain], True),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (build, stream) in variants.items():
            results[name].append(await measure(build(), metadata, stream))
    for name, runs in results.items():
        print(f"{name:40s} {statistics.median(runs):7.1f} us/call (CPU, median of {rounds})")
    await quiet.stop(0)
    await sampled.stop(0)


if __name__ == "__main__":
    asyncio.run(main())
