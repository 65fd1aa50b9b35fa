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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.domain import GuardVerdict, Tool
from service.guards.base import Action, Stage
from service.guards.check import Checked, GuardContext, check, merge_verdicts
from service.guards.compile import AgentGuards

TOOL_POLICY = "tool_policy"  # the verdicts' guard name for checks 1 and 2
NOT_OFFERED = "tool_not_offered"
BAD_ARGUMENTS = "invalid_arguments"


@dataclass(frozen=True, slots=True)
class ToolCallCheck:
    """A tool call after its checks. ``arguments_json``: what to send or run (redacted), and
    ``arguments`` the same parsed. ``blocked``: the first blocking verdict; when set, the call
    must not be sent or run, and ``problem`` says why in words a model can act on (the
    schema's complaint and where, or the guard and category; never the matched text)."""

    arguments_json: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    verdicts: tuple[GuardVerdict, ...] = ()
    blocked: GuardVerdict | None = None
    problem: str = ""


async def check_tool_call(
    guards: AgentGuards, ctx: GuardContext, tool: Tool | None, arguments_json: str
) -> ToolCallCheck:
    """The ``tool_call`` stage for one whole call: ``tool`` is the offered tool the call
    names (None when no offered tool has that name), ``arguments_json`` its arguments as
    the model wrote them. Never raises for what the model wrote; an external guard that
    errors follows its fail mode."""
    if tool is None:
        return _refused(ctx, NOT_OFFERED, arguments_json, "the tool is not offered to this call")
    return await check_arguments(guards, ctx, tool.parameters, arguments_json)


async def check_arguments(
    guards: AgentGuards, ctx: GuardContext, schema: Mapping[str, Any], arguments_json: str
) -> ToolCallCheck:
    """Checks 2 and 3 of the module docstring, for a tool known to be offered (the
    server-side tool loop asks this directly, with its tool's ``schema``)."""
    try:
        value = json.loads(arguments_json or "{}")
    except (ValueError, RecursionError):  # RecursionError: deep nesting
        return _refused(ctx, BAD_ARGUMENTS, arguments_json, "the arguments are not valid JSON")
    if not isinstance(value, dict):
        return _refused(ctx, BAD_ARGUMENTS, arguments_json, "the arguments must be a JSON object")
    if schema and (why := ctx.schemas.violation(schema, value)) is not None:
        return _refused(ctx, BAD_ARGUMENTS, arguments_json, why)
    text = arguments_json
    found: list[tuple[GuardVerdict, ...]] = []
    for stage in (Stage.OUTPUT, Stage.TOOL_CALL):
        checked = await check(guards.at(stage), stage, text, ctx)
        found.append(checked.verdicts)
        if checked.blocked is not None:
            why = f"blocked by guard {checked.blocked.guard} ({checked.blocked.category})"
            return ToolCallCheck(
                arguments_json, value, merge_verdicts(*found), checked.blocked, why
            )
        text = checked.text
    if text != arguments_json:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: deep nesting
            return _refused(ctx, BAD_ARGUMENTS, arguments_json, "redaction broke the arguments")
    return ToolCallCheck(text, value, merge_verdicts(*found))


def _refused(ctx: GuardContext, category: str, arguments_json: str, why: str) -> ToolCallCheck:
    verdict = GuardVerdict(TOOL_POLICY, Stage.TOOL_CALL.value, category, Action.BLOCK.value)
    ctx.observer.verdict(verdict)
    return ToolCallCheck(arguments_json, {}, (verdict,), verdict, why)


async def check_tool_result(guards: AgentGuards, ctx: GuardContext, text: str) -> Checked:
    """A tool's result (its text) checked by the agent's ``input`` guards before the model
    sees it: ``Checked.text`` is what to feed back (redacted); with ``Checked.blocked`` set,
    feed back a refusal instead (naming the guard and category, never the text)."""
    return await check(guards.input, Stage.TOOL_RESULT, text, ctx)
