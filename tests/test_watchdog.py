"""The per-attempt timer (service/watchdog.py): one limit per read, a cancellation from
anyone else passes through untouched, and time between reads is not the upstream's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.watchdog import FIRST_TOKEN, IDLE, Expired, Watchdog


async def items(gate: asyncio.Queue[int]) -> AsyncIterator[int]:
    while True:
        yield await gate.get()


async def test_first_and_idle_limits_raise_expired_and_name_the_limit() -> None:
    gate: asyncio.Queue[int] = asyncio.Queue()
    stream = items(gate)
    dog = Watchdog(first_s=0.05, idle_s=0.05)
    with pytest.raises(Expired) as first:
        await dog.read(stream)
    assert first.value.kind == FIRST_TOKEN
    stream = items(gate)
    dog = Watchdog(first_s=5.0, idle_s=0.05)
    gate.put_nowait(1)
    assert await dog.read(stream) == 1
    with pytest.raises(Expired) as idle:
        await dog.read(stream)
    assert idle.value.kind == IDLE
    dog.close()


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    gate: asyncio.Queue[int] = asyncio.Queue()
    dog = Watchdog(first_s=30.0)
    reader = asyncio.ensure_future(dog.read(items(gate)))
    await asyncio.sleep(0)  # let the read begin
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    dog.close()


async def test_time_between_reads_is_not_counted() -> None:
    gate: asyncio.Queue[int] = asyncio.Queue()
    stream = items(gate)
    dog = Watchdog(idle_s=0.2, first_s=5.0)
    gate.put_nowait(1)
    await dog.read(stream)
    await asyncio.sleep(0.3)  # the consumer is busy: not the upstream's silence
    gate.put_nowait(2)
    assert await dog.read(stream) == 2
    dog.close()
