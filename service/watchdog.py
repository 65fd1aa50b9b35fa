"""One timer per upstream attempt, bounding each read of its stream.

An attempt has up to three limits: its deadline (absolute), the time to its first event,
and the idle time between events (each measured from when the read began). An
``asyncio.timeout`` per read would allocate and schedule a timer per chunk; this keeps one
``loop.call_at`` handle per attempt and re-arms it only when it fires early (the common
case costs a clock read and two attribute stores per read), and only for a read that waits:
an item that is ready (buffered, or made without waiting) is taken in the read's first step
(:func:`begin`), with no timer and no task bookkeeping. When a limit passes during a
read, the reading task is cancelled with a message naming the limit, and the read raises
:class:`Expired`; a cancellation from anyone else passes through untouched (the
``Task.cancelling``/``uncancel`` protocol, as ``asyncio.timeout`` uses it). Between reads
nothing is cancelled: time the consumer spends is not the upstream's.

The timers of many watchdogs can share one loop handle (:class:`Alarms`: the router and each
provider keep one for all their attempts): a pending loop timer costs about 0.75 KB (with
uvloop: its handle, libuv's timer, a copy of the context), held by every answer that waits.

The message is ``switchboard:<kind>``: code that sees the cancellation travel through it
(the traced provider, recording the upstream call's outcome) can tell a timeout from a
caller that left (:func:`expired_kind`).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import types
from collections.abc import AsyncIterator, Awaitable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

DEADLINE = "deadline"
FIRST_TOKEN = "first_token_timeout"  # noqa: S105 (a limit's name, not a secret)
IDLE = "idle_timeout"
_PREFIX = "switchboard:"


class Expired(Exception):
    """A read outlived one of the watchdog's limits. ``kind`` is DEADLINE, FIRST_TOKEN or
    IDLE; ``limit_s`` the window that passed (for messages)."""

    def __init__(self, kind: str, limit_s: float) -> None:
        super().__init__(kind)
        self.kind = kind
        self.limit_s = limit_s


def expired_kind(exc: BaseException) -> str | None:
    """The watchdog limit a ``CancelledError`` stands for, or None (a plain cancellation)."""
    if isinstance(exc, asyncio.CancelledError) and exc.args:
        message = exc.args[0]
        if isinstance(message, str) and message.startswith(_PREFIX):
            return message[len(_PREFIX) :]
    return None


def begin(awaitable: Awaitable[T]) -> tuple[T | None, Awaitable[T] | None]:
    """``awaitable`` run to its first wait: ``(result, None)`` when it finished without
    waiting (nothing was scheduled, no timer needed), else ``(None, rest)``: await ``rest``
    for its result. Raises what it raises before its first wait."""
    step = awaitable.__await__()
    try:
        waiting = step.send(None)
    except StopIteration as ready:
        return ready.value, None
    return None, resumed(step, waiting)


@types.coroutine
def resumed(step: Generator[Any, Any, T], waiting: Any) -> Generator[Any, Any, T]:
    """Await ``step`` (an awaitable's iterator), already sent its first ``None``, on which it
    yielded ``waiting``: what ``yield from`` does (PEP 380) from its second step on. Lets a
    reader take an item that is ready without waiting, and arm a timer only when it waits."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:  # noqa: BLE001 (thrown in by the task: passed on)
            try:
                waiting = step.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            continue
        try:
            waiting = step.send(sent)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class Alarms:
    """The timers of many watchdogs on one loop handle, set for the earliest: a heap of
    ``(at, number, watchdog)``. An alarm a watchdog replaced or cancelled stays in the heap
    (its number is no longer the watchdog's) and is skipped when it comes due; the heap is
    rebuilt without such alarms when it has grown to twice its size at the last rebuild, so
    it holds at most about twice the alarms pending then; with none pending, the loop's
    timer is cancelled and the heap emptied. Bound to the loop it is first used on (a new
    loop starts it afresh: the old loop's timers cannot run any more)."""

    __slots__ = ("_handle", "_handle_at", "_heap", "_kept", "_loop", "_number", "_pending")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._number = 0
        self._pending = 0  # watchdogs with an alarm set
        self._kept = 0  # the heap's size after its last rebuild
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = math.inf

    def set(self, watchdog: Watchdog, at: float) -> None:
        """Call ``watchdog._ring()`` at ``at`` (loop time), in place of its alarm set
        before, unless :meth:`cancel` comes first."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._heap, self._kept, self._pending = loop, [], 0, 0
            self._handle, self._handle_at = None, math.inf
        if not watchdog._alarm:
            self._pending += 1
        self._number += 1
        watchdog._alarm = self._number
        heapq.heappush(self._heap, (at, self._number, watchdog))
        if len(self._heap) > 2 * self._kept + 64:
            self._heap = [entry for entry in self._heap if entry[2]._alarm == entry[1]]
            heapq.heapify(self._heap)
            self._kept = len(self._heap)
        if at < self._handle_at:
            self._arm(at)

    def cancel(self, watchdog: Watchdog) -> None:
        """Drop ``watchdog``'s alarm, if it has one."""
        if not watchdog._alarm:
            return
        watchdog._alarm = 0
        self._pending -= 1
        if self._pending <= 0:
            # None pending (counted again, in case a loop change lost count): no loop timer
            # left behind, holding the heap until its time.
            self._heap = [entry for entry in self._heap if entry[2]._alarm == entry[1]]
            heapq.heapify(self._heap)
            self._pending = self._kept = len(self._heap)
            if not self._heap and self._handle is not None:
                self._handle.cancel()
                self._handle, self._handle_at = None, math.inf

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(at, self._due)
        self._handle_at = at

    def _due(self) -> None:
        self._handle, self._handle_at = None, math.inf
        assert self._loop is not None
        heap, now = self._heap, self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][2]._alarm != heap[0][1]):
            _, number, watchdog = heapq.heappop(heap)
            if watchdog._alarm == number:
                watchdog._alarm = 0
                self._pending -= 1
                watchdog._ring()
        if heap:
            self._arm(heap[0][0])


class Watchdog:
    """The limits of one attempt. ``deadline_at`` is on the loop's clock (``time.monotonic``
    for the default loop, as :class:`service.deadline.Deadline` uses); None or ``inf``
    means no such limit. ``alarms``: the timers it shares (its own when None)."""

    __slots__ = (
        "_alarm",
        "_alarms",
        "_at",
        "_deadline_at",
        "_fired",
        "_first_s",
        "_handle_at",
        "_idle_s",
        "_kind",
        "_loop",
        "_reader",
        "_seen_first",
    )

    def __init__(
        self,
        *,
        deadline_at: float | None = None,
        first_s: float | None = None,
        idle_s: float | None = None,
        alarms: Alarms | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline_at = math.inf if deadline_at is None else deadline_at
        self._first_s = first_s
        self._idle_s = idle_s
        self._seen_first = False
        self._alarms = Alarms() if alarms is None else alarms
        self._alarm = 0  # the number of its pending alarm; 0: none
        self._handle_at = math.inf  # when its pending alarm rings
        self._reader: asyncio.Task[object] | None = None
        self._fired: asyncio.Task[object] | None = None
        self._at = math.inf  # when the read in progress expires
        self._kind = DEADLINE

    def _window(self) -> tuple[str, float | None]:
        if not self._seen_first:
            return FIRST_TOKEN, self._first_s
        return IDLE, self._idle_s

    async def read(self, events: AsyncIterator[T]) -> T:
        """``anext(events)`` within the limits.

        Raises:
            StopAsyncIteration: the iterator is exhausted.
            Expired: a limit passed before the item came (the iterator's pending step was
                cancelled; the caller should close it).
        """
        now = self._loop.time()
        kind, window = self._window()
        at, self._kind = self._deadline_at, DEADLINE
        if window is not None and now + window < at:
            at, self._kind = now + window, kind
        if at <= now:
            raise Expired(self._kind, window or 0.0)
        ready, rest = begin(anext(events))
        if rest is None:  # came without waiting: no limit could pass
            self._seen_first = True
            return ready  # type: ignore[return-value]
        # It waits: the timer bounds it.
        task = asyncio.current_task()
        assert task is not None
        self._at = at
        self._reader = task
        if at < self._handle_at:
            self._arm(at)
        cancelling = task.cancelling()
        try:
            item = await rest
        except asyncio.CancelledError:
            if self._fired is task:
                self._fired = None
                if task.uncancel() <= cancelling:
                    raise Expired(self._kind, window or 0.0) from None
            raise
        finally:
            self._reader = None
        self._seen_first = True
        return item

    def close(self) -> None:
        """Cancel the timer (idempotent). Call when the attempt ends."""
        self._alarms.cancel(self)
        self._handle_at = math.inf

    def _arm(self, at: float) -> None:
        self._alarms.set(self, at)
        self._handle_at = at

    def _ring(self) -> None:
        self._handle_at = math.inf
        reader = self._reader
        if reader is None:
            return  # between reads: the next read arms the timer again
        if self._loop.time() < self._at:
            self._arm(self._at)  # the read in progress began after the timer was set
            return
        self._fired = reader
        reader.cancel(f"{_PREFIX}{self._kind}")
