"""The input stage: the caller's messages checked before anything is stored or sent.

What this returns is what the sessions store, the cache key and the upstream see: a
redacted part is replaced, a blocked one ends the call with INVALID_ARGUMENT (reason
``GUARD_BLOCKED``) before any upstream call.
"""

from __future__ import annotations

from dataclasses import replace

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


async def guard_input(
    guards: AgentGuards, request: AgentRequest, ctx: GuardContext
) -> tuple[AgentRequest, tuple[GuardVerdict, ...]]:
    """``request`` with its messages checked by the agent's input guards: the request to
    serve (redacted) and the verdicts.

    Raises:
        InvalidArgument: a guard blocked a message (reason GUARD_BLOCKED).
    """
    if not guards.input:
        return request, ()
    verdicts: list[tuple[GuardVerdict, ...]] = []
    messages: list[Message] = []
    for i, message in enumerate(request.messages):
        parts: list[ContentPart] = []
        for j, part in enumerate(message.content):
            if isinstance(part, TextPart):
                checked = await check(guards.input, Stage.INPUT, part.text, ctx)
                verdicts.append(checked.verdicts)
                if checked.blocked is not None:
                    raise blocked(checked.blocked, f"messages[{i}].content[{j}].text")
                parts.append(TextPart(checked.text) if checked.text != part.text else part)
            else:
                parts.append(part)
        calls: list[ToolCall] = []
        for j, call in enumerate(message.tool_calls):
            checked = await check(guards.input, Stage.INPUT, call.arguments_json, ctx)
            verdicts.append(checked.verdicts)
            if checked.blocked is not None:
                raise blocked(checked.blocked, f"messages[{i}].tool_calls[{j}].arguments_json")
            calls.append(replace(call, arguments_json=checked.text))
        messages.append(replace(message, content=tuple(parts), tool_calls=tuple(calls)))
    merged = merge_verdicts(*verdicts)
    if not merged:
        return request, ()
    return replace(request, messages=tuple(messages)), merged
