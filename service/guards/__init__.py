"""Guards: check and redact what goes in, what comes out (streamed), and what tools the
model calls (docs/guards.md)."""

from service.guards.base import Action, Stage
from service.guards.check import Guard, GuardContext, GuardObserver, NoObserver, check
from service.guards.compile import NO_GUARDS, AgentGuards, agent_guards, compile_guards
from service.guards.request import guard_input
from service.guards.stream import OutputGuard

__all__ = [
    "NO_GUARDS",
    "Action",
    "AgentGuards",
    "Guard",
    "GuardContext",
    "GuardObserver",
    "NoObserver",
    "OutputGuard",
    "Stage",
    "agent_guards",
    "check",
    "compile_guards",
    "guard_input",
]
