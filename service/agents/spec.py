"""An agent as the runner sees it: built once per config snapshot."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain import Parameters, Tool
from service.providers.base import TargetSpec
from service.routing.policy import RoutePolicy


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
    routing: RoutePolicy | None = None  # None: plain ordered fallback over ``route``
