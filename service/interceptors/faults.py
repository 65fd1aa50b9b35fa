"""The layer that sees every exception nothing mapped to a status.

Two ways a bug reaches here: a servicer maps it with :func:`service.api.errors.abort` (INTERNAL
"internal error"; the AbortError's ``__cause__`` is the original exception), or it escapes a
servicer or a later layer unmapped (grpc would answer UNKNOWN and log a traceback per call):
this layer ends the call with INTERNAL "internal error" instead. Either way the exception is
handed to the :class:`~service.observability.faults.FaultLog`, which logs a kind once per
window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from service.api.errors import abort
from service.errors import SwitchboardError
from service.interceptors.base import Context, Layer, Method, StreamBehavior, UnaryBehavior
from service.observability.faults import FaultLog


def _unexpected(exc: BaseException | None) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, SwitchboardError)


class FaultLayer(Layer):
    def __init__(self, faults: FaultLog) -> None:
        super().__init__()
        self._faults = faults

    async def _fault(self, context: Context, exc: Exception) -> None:
        """Report ``exc`` (or what an AbortError hides) when unexpected; end the call with
        the status for an exception that escaped unmapped (raises AbortError then)."""
        if isinstance(exc, grpc.aio.AbortError):
            if _unexpected(exc.__cause__):
                self._faults.report(exc.__cause__)  # type: ignore[arg-type]
            return
        if _unexpected(exc):
            self._faults.report(exc)
        await abort(context, exc)

    async def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Any:
        try:
            return await call(request, context)
        except Exception as exc:
            await self._fault(context, exc)
            raise

    async def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        try:
            async for response in call(request, context):
                yield response
        except Exception as exc:
            await self._fault(context, exc)
            raise
