"""Chooses a target for a call and opens its answer.

A call commits to a target when the target yields its first event: until then, a retryable
failure moves on to the next target on the route (fallback); after it, a failure ends the call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from service.deadline import Deadline
from service.domain import ProviderEvent
from service.errors import SwitchboardError, Unavailable
from service.providers.base import ModelCall, Provider, TargetSpec

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Opened:
    """An answer that has begun: its target, the attempts it took, and its events.

    ``events`` starts with the first event already received. The owner must close it
    (``aclose``), which closes the upstream request if it is still open.
    """

    target: TargetSpec
    attempts: int
    events: AsyncGenerator[ProviderEvent, None]


class Router:
    """Routes calls over the providers built for one config snapshot."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._providers = providers

    async def open(
        self, route: tuple[TargetSpec, ...], call: ModelCall, deadline: Deadline
    ) -> Opened:
        """Open the call on the first target of ``route`` that starts answering.

        Raises:
            SwitchboardError: the last target's error when every target failed, or the first
                non-retryable error (a caller error is never retried elsewhere).
            DeadlineExceeded: no time is left before an attempt.
        """
        last_error: SwitchboardError | None = None
        for attempts, target in enumerate(route, start=1):
            deadline.check(f"calling target {target.name!r}")
            provider = self._providers[target.name]
            events = provider.stream(_for_target(call, target), deadline)
            try:
                first = await anext(events)
            except StopAsyncIteration:
                error: SwitchboardError = Unavailable(
                    f"target {target.name!r} ended its answer before it began"
                )
            except SwitchboardError as exc:
                error = exc
            else:
                return Opened(target, attempts, _prepend(first, events))
            with contextlib.suppress(Exception):
                await events.aclose()
            if not error.retryable:
                raise error
            log.warning(
                "target failed, trying the next one",
                extra={"target": target.name, "error": error.message},
            )
            last_error = error
        assert last_error is not None, "a route has at least one target"
        raise last_error


def _for_target(call: ModelCall, target: TargetSpec) -> ModelCall:
    """The call with the target's default parameters under the agent's and the caller's."""
    if not target.parameters.set_fields():
        return call
    return ModelCall(
        system_prompt=call.system_prompt,
        messages=call.messages,
        parameters=target.parameters.overridden_by(call.parameters),
        tools=call.tools,
    )


async def _prepend(
    first: ProviderEvent, rest: AsyncGenerator[ProviderEvent, None]
) -> AsyncGenerator[ProviderEvent, None]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()
