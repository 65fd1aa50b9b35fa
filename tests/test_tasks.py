"""service.tasks.task_group: a task's Switchboard error comes out as itself (the first one,
depth first), not in an ExceptionGroup that the error table would call INTERNAL."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from service.api.errors import to_status
from service.errors import InvalidArgument, Unavailable
from service.tasks import first_error, task_group


async def test_a_tasks_switchboard_error_is_raised_as_itself_and_the_rest_are_cancelled() -> None:
    other_started = asyncio.Event()
    other: asyncio.Task[None] | None = None

    async def fails() -> None:
        await other_started.wait()
        raise Unavailable("the tool's server is down")

    async def waits() -> None:
        other_started.set()
        await asyncio.Event().wait()  # until cancelled

    async def both() -> None:
        nonlocal other
        async with task_group() as group:
            group.create_task(fails())
            other = group.create_task(waits())

    with pytest.raises(Unavailable) as raised:
        await both()
    assert raised.value.message == "the tool's server is down"
    assert to_status(raised.value).code == grpc.StatusCode.UNAVAILABLE
    assert other is not None
    assert other.cancelled()


async def test_an_error_of_the_body_is_raised_as_itself() -> None:
    with pytest.raises(InvalidArgument):
        async with task_group():
            raise InvalidArgument("bad")


async def test_a_group_with_no_switchboard_error_is_raised_whole() -> None:
    async def bug() -> None:
        raise KeyError("x")

    async def one() -> None:
        async with task_group() as group:
            group.create_task(bug())

    with pytest.raises(ExceptionGroup) as raised:
        await one()
    assert [type(e) for e in raised.value.exceptions] == [KeyError]
    assert to_status(raised.value).code == grpc.StatusCode.INTERNAL


def test_the_first_switchboard_error_decides_depth_first() -> None:
    inner = Unavailable("inner")
    group = ExceptionGroup(
        "tasks", [KeyError("a"), ExceptionGroup("nested", [ValueError(), inner]), Unavailable("b")]
    )
    assert first_error(group) is inner
    assert first_error(ExceptionGroup("none", [KeyError("a")])) is None


async def test_cancelling_the_owner_cancels_the_tasks_and_propagates() -> None:
    started = asyncio.Event()
    inner: asyncio.Task[None] | None = None

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    async def owner() -> None:
        nonlocal inner
        async with task_group() as group:
            inner = group.create_task(waits())

    task = asyncio.create_task(owner())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner is not None
    assert inner.cancelled()
