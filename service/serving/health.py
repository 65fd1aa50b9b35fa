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
