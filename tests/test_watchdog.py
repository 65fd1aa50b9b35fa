"""The per-attempt timer (service/watchdog.py): one limit per read, a cancellation from
anyone else passes through untouched, and time between reads is not the upstream's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from service.deadline import Deadline
from service.domain import Message, Parameters, Role, TextPart
from service.errors import DeadlineExceeded
from service.providers.base import ModelCall, TargetSpec
from service.providers.mock import MockProvider
from service.watchdog import FIRST_TOKEN, IDLE, Alarms, Expired, Watchdog, begin


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


async def test_the_mock_provider_times_out_its_reads_not_its_consumer() -> None:
    # A timeout held across the provider's yields would fire while the consumer works and
    # cancel the consumer (CancelledError); the limit must surface as DeadlineExceeded.
    spec = TargetSpec(name="m", provider="mock", model="echo", timeout_s=0.2)
    call = ModelCall("", (Message(Role.USER, (TextPart("one two three"),)),), Parameters())
    events = MockProvider(spec).stream(call, Deadline.after(30))

    async def consume_slowly() -> None:
        async for _ in events:
            await asyncio.sleep(0.3)

    with pytest.raises(DeadlineExceeded, match="while the mock model was answering"):
        await consume_slowly()
    await events.aclose()


async def test_a_ready_item_is_taken_in_the_first_step_and_a_waiting_one_awaited() -> None:
    async def now() -> str:
        return "ready"

    assert begin(now()) == ("ready", None)
    gate: asyncio.Queue[int] = asyncio.Queue()
    ready, rest = begin(gate.get())
    assert ready is None
    assert rest is not None
    gate.put_nowait(7)
    assert await rest == 7


async def test_a_waiting_step_passes_a_cancellation_in_and_its_handling_out() -> None:
    seen: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            return "handled"
        return "slept"

    async def read() -> str:
        _ready, rest = begin(slow())
        assert rest is not None
        return await rest

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)  # let the read begin, and wait
    reader.cancel()
    assert await reader == "handled"
    assert seen == ["cancelled inside"]


async def test_ready_reads_then_a_waiting_one_still_time_out() -> None:
    gate: asyncio.Queue[int] = asyncio.Queue()
    stream = items(gate)
    dog = Watchdog(first_s=5.0, idle_s=0.05)
    gate.put_nowait(1)
    gate.put_nowait(2)
    assert [await dog.read(stream), await dog.read(stream)] == [1, 2]  # taken without waiting
    with pytest.raises(Expired) as idle:
        await dog.read(stream)
    assert idle.value.kind == IDLE
    dog.close()


async def test_watchdogs_sharing_alarms_each_keep_their_own_limit() -> None:
    # One loop timer for many watchdogs: each expires at its own limit, whatever the others
    # (closed, re-armed, later) did; once none is pending, no timer is left behind.
    alarms = Alarms()
    gates = [asyncio.Queue[int]() for _ in range(3)]
    late = Watchdog(first_s=30.0, alarms=alarms)
    closed = Watchdog(first_s=0.01, alarms=alarms)
    soon = Watchdog(first_s=0.05, idle_s=0.05, alarms=alarms)
    late_read = asyncio.ensure_future(late.read(items(gates[0])))
    closed_read = asyncio.ensure_future(closed.read(items(gates[1])))
    await asyncio.sleep(0)
    closed.close()  # its alarm, the earliest, must not cancel its reader
    gates[2].put_nowait(1)
    soon_items = items(gates[2])
    assert await soon.read(soon_items) == 1
    with pytest.raises(Expired) as idle:
        await soon.read(soon_items)
    assert idle.value.kind == IDLE
    assert not closed_read.done()
    assert not late_read.done()
    gates[1].put_nowait(2)
    assert await closed_read == 2
    late_read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late_read
    for dog in (late, soon):
        dog.close()
    assert alarms._handle is None
    assert not alarms._heap  # nothing left pending: no loop timer, no heap


async def test_shared_alarms_drop_replaced_alarms_as_they_go() -> None:
    # Watchdogs that come and go (each attempt closes its own) leave no growing heap.
    alarms = Alarms()
    keep = Watchdog(first_s=60.0, alarms=alarms)
    reader = asyncio.ensure_future(keep.read(items(asyncio.Queue())))
    await asyncio.sleep(0)
    for _ in range(1000):
        gate: asyncio.Queue[int] = asyncio.Queue()
        gate.put_nowait(1)
        dog = Watchdog(first_s=30.0, alarms=alarms)
        assert await dog.read(items(gate)) == 1
        dog.close()
    assert len(alarms._heap) < 100  # the replaced alarms were dropped
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    keep.close()
