"""The provider interface: one model call in, a stream of provider events out."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.deadline import Deadline
from service.domain import Message, Parameters, ProviderEvent, TargetRef, Tool
from service.secrets import Secret


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A configured upstream: a provider kind, a model, and how to reach it."""

    name: str
    provider: str
    model: str
    base_url: str | None = None
    api_key: Secret | None = None
    parameters: Parameters = field(default_factory=Parameters)
    timeout_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    first_token_timeout_s: float | None = None
    idle_timeout_s: float | None = None
    # Which target this is, as responses report it (never its secrets); made once.
    ref: TargetRef = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", TargetRef(self.name, self.provider, self.model))


@dataclass(frozen=True, slots=True)
class ModelCall:
    """Everything a provider needs for one upstream call, already validated and merged."""

    system_prompt: str
    messages: tuple[Message, ...]
    parameters: Parameters
    tools: tuple[Tool, ...] = ()
    whole: bool = False
    """The caller takes the answer whole (``Invoke``) and no first-token, idle or hedge
    timing depends on when its first token comes: a provider may ask its upstream for a
    non-streamed answer and yield it as a few events (the router decides; see
    :mod:`service.routing.whole`)."""


class Provider(Protocol):
    """One configured target's client. Built once per target, shared by all calls."""

    def stream(self, call: ModelCall, deadline: Deadline) -> AsyncGenerator[ProviderEvent, None]:
        """Run the call upstream and yield its events, ending with exactly one ``Finish``.

        Honours ``deadline`` for the whole call. Raises a ``SwitchboardError``: ``Unavailable``
        when the upstream fails or its stream ends without a terminal event,
        ``DeadlineExceeded`` when time runs out, ``InvalidArgument`` when the upstream
        rejects the request. Closing the iterator (or cancelling its consumer) closes the
        upstream request.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. The provider is not used after this."""
        ...
