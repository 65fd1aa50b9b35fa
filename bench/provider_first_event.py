"""The openai provider alone: time to its first event against the fast fake upstream
(bench/fast_upstream.py, 50 chunks written at once), beside the same request made with
aiohttp directly (the floor: the transport and the network, no SDK, no parsing).

    .venv/bin/python bench/provider_first_event.py [--calls 300] [--rounds 3]

One process on uvloop, pin it (``taskset -c 0``) for steadier figures; the upstream runs in
its own process. Prints the median per round, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_rigs import KEY, SYSTEM, USER, Upstream, openai_body

from service.deadline import Deadline
from service.domain import Message, Parameters, Role, TextPart
from service.providers.base import ModelCall, TargetSpec
from service.providers.openai_chat import OpenAIChatProvider
from service.secrets import Secret


async def rounds(upstream: Upstream, calls: int, count: int) -> None:
    spec = TargetSpec(
        name="gpt",
        provider="openai",
        model="bench-model",
        base_url=upstream.base_url,
        api_key=Secret(KEY),
    )
    provider = OpenAIChatProvider(spec)
    call = ModelCall(
        system_prompt=SYSTEM,
        messages=(Message(Role.USER, (TextPart(USER),)),),
        parameters=Parameters(),
    )
    session = aiohttp.ClientSession()
    body = openai_body(stream=True)
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}

    async def through_provider() -> float:
        began, first = time.perf_counter(), 0.0
        async for _ in provider.stream(call, Deadline.after(30)):
            first = first or time.perf_counter() - began
        return first

    async def raw() -> float:
        began, first = time.perf_counter(), 0.0
        url = f"{upstream.base_url}/chat/completions"
        async with session.post(url, data=body, headers=headers) as response:
            async for _ in response.content.iter_any():
                first = first or time.perf_counter() - began
        return first

    ways: dict[str, Callable[[], Awaitable[float]]] = {"provider": through_provider, "raw": raw}
    try:
        for way in ways.values():  # warm-up: connections, the provider's first request
            for _ in range(30):
                await way()
        for n in range(count):
            line = []
            for name, way in ways.items():
                samples = [await way() for _ in range(calls)]
                line.append(f"{name} {statistics.median(samples) * 1000:.3f} ms")
            print(f"round {n + 1}: " + ", ".join(line), flush=True)
    finally:
        await provider.aclose()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logs = Path(__file__).resolve().parent / "data" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    upstream = Upstream(50, logs / "provider_first_event_upstream.log")
    try:
        uvloop.run(rounds(upstream, args.calls, args.rounds))
    finally:
        upstream.stop()


if __name__ == "__main__":
    main()
