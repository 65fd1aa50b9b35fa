"""The ``tool_call`` stage, and the guards on tool results.

Whatever sends or runs a model's tool call asks :func:`check_tool_call` first: the runner
for tools the caller runs (through :class:`~service.guards.stream.OutputGuard`), the
server-side tool loop (``service.tools``) for the tools it runs. A call passes when

1. the tool is offered to the call (the caller passes the :class:`~service.domain.Tool`
   it found, or None: ``tool_not_offered``);
2. its arguments are a JSON object valid under the tool's JSON schema
   (``invalid_arguments``);
3. the agent's ``output`` guards, then its ``tool_call`` guards, pass the arguments
   (redacting them where a guard redacts).

1 and 2 need no config: they apply to every agent, with or without a ``guards:`` section.

A tool's result goes back to the model only through :func:`check_tool_result`: the agent's
``input`` guards (prompt injection from tool output is the classic attack), with verdicts
of stage ``tool_result``.

Both report their verdicts to ``ctx.observer`` (metrics, span events) themselves. What the
caller owes: carry the verdicts into the Finish it yields (``merge_verdicts``), so the
caller, the call log and the audit entry see them; never run a blocked call, never feed a
blocked result to the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from service.domain import GuardVerdict, Tool
from service.guards.base import Action, Stage
from service.guards.check import Checked, GuardContext, check, merge_verdicts
from service.guards.compile import AgentGuards
from service.schemas import Schemas

TOOL_POLICY = "tool_policy"  # the verdicts' guard name for checks 1 and 2
NOT_OFFERED = "tool_not_offered"
BAD_ARGUMENTS = "invalid_arguments"


@dataclass(frozen=True, slots=True)
class ToolCallCheck:
    """A tool call after its checks. ``arguments_json``: what to send or run (redacted).
    ``blocked``: the first blocking verdict; when set, the call must not be sent or run."""

    arguments_json: str
    verdicts: tuple[GuardVerdict, ...] = ()
    blocked: GuardVerdict | None = None


async def check_tool_call(
    guards: AgentGuards, ctx: GuardContext, tool: Tool | None, arguments_json: str
) -> ToolCallCheck:
    """The ``tool_call`` stage for one whole call: ``tool`` is the offered tool the call
    names (None when no offered tool has that name), ``arguments_json`` its arguments as
    the model wrote them. Never raises for what the model wrote; an external guard that
    errors follows its fail mode."""
    problem = tool_problem(tool, arguments_json, ctx.schemas)
    if problem:
        verdict = GuardVerdict(TOOL_POLICY, Stage.TOOL_CALL.value, problem, Action.BLOCK.value)
        ctx.observer.verdict(verdict)
        return ToolCallCheck(arguments_json, (verdict,), verdict)
    text = arguments_json
    found: list[tuple[GuardVerdict, ...]] = []
    for stage in (Stage.OUTPUT, Stage.TOOL_CALL):
        checked = await check(guards.at(stage), stage, text, ctx)
        found.append(checked.verdicts)
        if checked.blocked is not None:
            return ToolCallCheck(arguments_json, merge_verdicts(*found), checked.blocked)
        text = checked.text
    return ToolCallCheck(text, merge_verdicts(*found))


async def check_tool_result(guards: AgentGuards, ctx: GuardContext, text: str) -> Checked:
    """A tool's result (its text) checked by the agent's ``input`` guards before the model
    sees it: ``Checked.text`` is what to feed back (redacted); with ``Checked.blocked`` set,
    feed back a refusal instead (naming the guard and category, never the text)."""
    return await check(guards.input, Stage.TOOL_RESULT, text, ctx)


def tool_problem(tool: Tool | None, arguments_json: str, schemas: Schemas) -> str:
    """Why a tool call may not be sent: ``tool_not_offered``, ``invalid_arguments``, or ""."""
    if tool is None:
        return NOT_OFFERED
    try:
        value = json.loads(arguments_json or "{}")
    except ValueError:
        return BAD_ARGUMENTS
    if not isinstance(value, dict):
        return BAD_ARGUMENTS
    validator = schemas.validator(tool.parameters) if tool.parameters else None
    if validator is not None and not validator.is_valid(value):
        return BAD_ARGUMENTS
    return ""
