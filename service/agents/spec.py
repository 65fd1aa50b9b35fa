"""An agent as the runner sees it: built once per config snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.domain import Parameters, Tool
from service.guards import NO_GUARDS, AgentGuards
from service.providers.base import TargetSpec
from service.routing.policy import RoutePolicy
from service.tools.spec import LoopPolicy
from service.usage.bound import agent_bound


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """How much session history the agent sees: the newest turns within both limits."""

    max_turns: int = 20
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """``off``; ``on`` (a request may opt out); ``opt_in`` (only requests that ask)."""

    mode: str = "off"
    ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    description: str
    version: str
    system_prompt: str
    route: tuple[TargetSpec, ...]
    parameters: Parameters
    overridable_parameters: frozenset[str]
    tools: tuple[Tool, ...]
    accepts_caller_tools: bool
    memory: MemoryPolicy = field(default_factory=MemoryPolicy)
    cache: CachePolicy = field(default_factory=CachePolicy)
    routing: RoutePolicy | None = None  # None: plain ordered fallback over ``route``
    guards: AgentGuards = NO_GUARDS  # compiled once per config snapshot
    # A hash of everything that shapes the answers (prompt, tools, parameters, route),
    # whatever ``version`` the operator gave: what the response cache keys on.
    fingerprint: str = ""
    # Tools the server runs for this agent, and its loop's limits; None: it has none, and
    # every tool call goes back to the caller.
    loop: LoopPolicy | None = None
    # The bound of the system prompt's and tools' input tokens (service.usage.bound), made
    # once per spec: every call's reservations and rate limits add their messages to it.
    input_tokens: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_tokens", agent_bound(self.system_prompt, self.tools))
