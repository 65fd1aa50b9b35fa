"""grpc's asyncio health servicer, with Watch streams that end when the drain is over.

A ``Watch`` stream stays open for as long as its caller keeps it: ``server.stop(grace)``
waits for it like for any call, so one open watcher (a load balancer, a sidecar, a
client-side health check) held every drain for the whole grace period even when no call
was in flight. :meth:`DrainingHealth.end_watches` ends them: each watcher gets a last
NOT_SERVING and the stream ends with OK, so the server stops as soon as the real calls
are done. A watcher that calls again while the server is still stopping gets NOT_SERVING
and an immediate end.

``Watch`` is our own loop (grpc's is ``while True`` and could only be ended by cancelling
it, which could land while it was writing: the last NOT_SERVING then met the write still
in flight, GRPC_CALL_ERROR_TOO_MANY_OPERATIONS, and the watcher got INTERNAL). Each stream
writes from its own task only, one message at a time, and returns when told to end.
``Check`` and ``set`` are grpc's (the statuses are kept here too, for the watchers).
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

TARGET_PREFIX = "switchboard.target."  # + a target's name: its breaker, as a health service
_status = health_pb2.HealthCheckResponse


class DrainingHealth(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """The standard servicer (status per service, ``enter_graceful_shutdown``) plus
    :meth:`end_watches`."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": _status.SERVING}  # grpc's initial state
        self._wake = asyncio.Event()  # set, and replaced, at every change
        self._watching = 0
        self._ended = False

    async def set(self, service: str, status: int) -> None:
        """grpc's ``set`` (ignored once shutting down), and the watchers told."""
        if self._gracefully_shutting_down:
            return
        await super().set(service, status)
        self._statuses[service] = status
        self._changed()

    async def report(self, service: str, ok: bool) -> None:
        """``service`` SERVING when ``ok``, else NOT_SERVING."""
        await self.set(service, _status.SERVING if ok else _status.NOT_SERVING)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on (grpc's), and the watchers told."""
        await super().enter_graceful_shutdown()
        self._statuses = dict.fromkeys(self._statuses, _status.NOT_SERVING)
        self._changed()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:  # noqa: N802 (grpc's name)
        """Stream the service's status (SERVICE_UNKNOWN until it is set) at each change,
        until the caller leaves or :meth:`end_watches`: then a last NOT_SERVING and OK."""
        self._watching += 1
        last = None
        try:
            while True:
                wake = self._wake
                if self._ended:  # the last word, even if it was the one before
                    await context.write(_status(status=_status.NOT_SERVING))
                    return
                status = self._statuses.get(request.service, _status.SERVICE_UNKNOWN)
                if status != last:
                    await context.write(_status(status=status))
                    last = status
                await wake.wait()
        finally:
            self._watching -= 1

    def end_watches(self) -> int:
        """End every open ``Watch`` stream (and any opened later); returns how many were
        open. Call it after :meth:`enter_graceful_shutdown`."""
        self._ended = True
        self._changed()
        return self._watching

    def _changed(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()


class TargetHealth:
    """Each target's circuit breaker mirrored as the health service
    ``switchboard.target.<name>``: open is NOT_SERVING, closed or half-open SERVING. Breakers
    report through :meth:`changed` (a plain callback); :meth:`run` publishes, in order, until
    cancelled."""

    def __init__(self, health_servicer: DrainingHealth) -> None:
        self._health = health_servicer
        self._changes: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()

    def changed(self, target: str, *, is_open: bool) -> None:
        self._changes.put_nowait((target, is_open))

    async def run(self) -> None:
        while True:
            name, is_open = await self._changes.get()
            await self._health.report(TARGET_PREFIX + name, not is_open)
