"""grpc's asyncio health servicer, with Watch streams that end when the drain is over.

A ``Watch`` stream stays open for as long as its caller keeps it: ``server.stop(grace)``
waits for it like for any call, so one open watcher (a load balancer, a sidecar, a
client-side health check) held every drain for the whole grace period even when no call
was in flight. :meth:`DrainingHealth.end_watches` ends them: each watcher gets a last
NOT_SERVING and the stream ends with OK, so the server stops as soon as the real calls
are done. A watcher that calls again while the server is still stopping gets NOT_SERVING
and an immediate end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

_END = "switchboard: health watches end with the drain"
TARGET_PREFIX = "switchboard.target."  # + a target's name: its breaker, as a health service
NOT_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


class DrainingHealth(health.aio.HealthServicer):  # type: ignore[misc,name-defined]
    """The standard servicer (status per service, ``enter_graceful_shutdown``) plus
    :meth:`end_watches`."""

    def __init__(self) -> None:
        super().__init__()
        self._watching: set[asyncio.Task[Any]] = set()
        self._ended = False

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:  # noqa: N802 (grpc's name)
        """Stream the service's status (grpc's own Watch) until the caller leaves or
        :meth:`end_watches` ends it; raises CancelledError only for a cancel of the call."""
        task = asyncio.current_task()
        assert task is not None
        if self._ended:
            await context.write(NOT_SERVING)
            return
        self._watching.add(task)
        try:
            await super().Watch(request, context)
        except asyncio.CancelledError as exc:
            if not (exc.args and exc.args[0] == _END and task.uncancel() == 0):
                raise
        finally:
            self._watching.discard(task)
        await context.write(NOT_SERVING)  # the last word, whether or not grpc's loop sent it

    def end_watches(self) -> int:
        """End every open ``Watch`` stream (and any opened later); returns how many were
        open. Call it after :meth:`enter_graceful_shutdown`."""
        self._ended = True
        for task in self._watching:
            task.cancel(_END)
        return len(self._watching)


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
        status = health_pb2.HealthCheckResponse
        while True:
            name, is_open = await self._changes.get()
            await self._health.set(
                TARGET_PREFIX + name, status.NOT_SERVING if is_open else status.SERVING
            )
