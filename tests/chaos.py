"""Helpers for the resilience scenarios: reach the mock targets of a served app, wait on
conditions (bounded), and check that nothing was left running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.providers.mock import MockProvider
from tests.harness import Served


def mock(served: Served, target: str) -> MockProvider:
    provider = served.app.providers[target]
    assert isinstance(provider, MockProvider)
    return provider


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` (generous: shared CPU)."""
    give_up = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)


async def health(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return int(response.status)


async def wait_for_health(
    channel: grpc.aio.Channel, service: str, status: int, timeout_s: float = 10.0
) -> None:
    give_up = time.monotonic() + timeout_s
    while (seen := await health(channel, service)) != status:
        if time.monotonic() > give_up:
            raise AssertionError(f"{service}: health {seen}, expected {status}")
        await asyncio.sleep(0.01)


# grpc's server keeps a task waiting for the next call: one for its generic handlers
# (``_request_call``, renewed for every call; Switchboard serves through these only:
# service/serving/wiring.py) and one per registered method (``_request_registered_call``,
# started on the method's first call). They are the server's, not leaks. A fake upstream
# serves each kept-alive connection of the SDK's pool in a task: pooled, not leaked (closed
# requests are checked through the fake's ``abandoned`` count instead).
_SERVER_WAITERS = {"_request_call", "_request_registered_call"}
_FAKES = str(Path(__file__).parent / "fakes")


def _is_server_waiter(task: asyncio.Task[object]) -> bool:
    stack = task.get_stack(limit=1)
    if not stack:
        return False
    code = stack[0].f_code
    return code.co_name in _SERVER_WAITERS or code.co_filename.startswith(_FAKES)


def other_tasks(before: set[asyncio.Task[object]]) -> set[asyncio.Task[object]]:
    """Tasks alive now that were not before: this one and grpc's waiters excluded."""
    return {
        t
        for t in asyncio.all_tasks()
        if t not in before and t is not asyncio.current_task() and not _is_server_waiter(t)
    }


async def no_tasks_left(before: set[asyncio.Task[object]], timeout_s: float = 10.0) -> None:
    """Every task started since ``before`` has ended (grpc's own per-call tasks included)."""
    try:
        await wait_for(lambda: not other_tasks(before), "scenario tasks to end", timeout_s)
    except AssertionError as exc:
        left = "; ".join(f"{t.get_name()} {t.get_stack(limit=3)}" for t in other_tasks(before))
        raise AssertionError(f"tasks left behind: {left}") from exc
