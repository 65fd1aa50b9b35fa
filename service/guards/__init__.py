"""Guards: check and redact what goes in, what comes out (streamed), and what tools the
model calls (docs/guards.md)."""

from service.guards.base import Action, Stage
from service.guards.check import (
    Guard,
    GuardContext,
    GuardObserver,
    NoObserver,
    check,
    merge_verdicts,
)
from service.guards.compile import NO_GUARDS, AgentGuards, agent_guards, compile_guards
from service.guards.request import guard_input
from service.guards.stream import OutputGuard
from service.guards.tools import ToolCallCheck, check_tool_call, check_tool_result

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
    "ToolCallCheck",
    "agent_guards",
    "check",
    "check_tool_call",
    "check_tool_result",
    "compile_guards",
    "guard_input",
    "merge_verdicts",
]
