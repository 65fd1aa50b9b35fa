"""The input stage: the caller's messages checked before anything is stored or sent.

What this returns is what the sessions store, the cache key and the upstream see: a
redacted part is replaced, a blocked one ends the call with INVALID_ARGUMENT (reason
``GUARD_BLOCKED``) before any upstream call; the runner has the refusal audited first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from service.domain import AgentRequest, ContentPart, GuardVerdict, Message, TextPart, ToolCall
from service.errors import FieldViolation, InvalidArgument, Reason
from service.guards.base import Stage
from service.guards.check import GuardContext, check, merge_verdicts
from service.guards.compile import AgentGuards


def blocked(verdict: GuardVerdict, where: str) -> InvalidArgument:
    """The error for a text ``verdict`` blocked at ``where`` (a field path): it names the
    guard, the stage and the category, never the matched text."""
    description = f"blocked by guard {verdict.guard!r} ({verdict.stage}: {verdict.category})"
    return InvalidArgument(
        f"{where}: {description}", [FieldViolation(where, description)], reason=Reason.GUARD_BLOCKED
    ).about(guard=verdict.guard, stage=verdict.stage, category=verdict.category)


@dataclass(frozen=True, slots=True)
class GuardedInput:
    """A request after the input guards: ``request`` to serve (redacted), the verdicts so
    far, and ``refusal``, set when a guard blocked (the error to raise once the decision is
    recorded)."""

    request: AgentRequest
    verdicts: tuple[GuardVerdict, ...] = ()
    refusal: InvalidArgument | None = None


async def guard_input(
    guards: AgentGuards, request: AgentRequest, ctx: GuardContext
) -> GuardedInput:
    """``request`` with its messages checked by the agent's input guards, in order; the
    first block stops the checks (its refusal: INVALID_ARGUMENT, reason GUARD_BLOCKED, naming
    the field). Raises nothing for what the caller wrote."""
    if not guards.input:
        return GuardedInput(request)
    verdicts: list[tuple[GuardVerdict, ...]] = []
    messages: list[Message] = []
    for i, message in enumerate(request.messages):
        parts: list[ContentPart] = []
        for j, part in enumerate(message.content):
            if isinstance(part, TextPart):
                checked = await check(guards.input, Stage.INPUT, part.text, ctx)
                verdicts.append(checked.verdicts)
                if checked.blocked is not None:
                    refusal = blocked(checked.blocked, f"messages[{i}].content[{j}].text")
                    return GuardedInput(request, merge_verdicts(*verdicts), refusal)
                parts.append(TextPart(checked.text) if checked.text != part.text else part)
            else:
                parts.append(part)
        calls: list[ToolCall] = []
        for j, call in enumerate(message.tool_calls):
            checked = await check(guards.input, Stage.INPUT, call.arguments_json, ctx)
            verdicts.append(checked.verdicts)
            if checked.blocked is not None:
                where = f"messages[{i}].tool_calls[{j}].arguments_json"
                return GuardedInput(
                    request, merge_verdicts(*verdicts), blocked(checked.blocked, where)
                )
            calls.append(replace(call, arguments_json=checked.text))
        messages.append(replace(message, content=tuple(parts), tool_calls=tuple(calls)))
    merged = merge_verdicts(*verdicts)
    if not merged:
        return GuardedInput(request)
    return GuardedInput(replace(request, messages=tuple(messages)), merged)
