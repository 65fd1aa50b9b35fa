"""Handoff and supervisor workflows: agents that pass work on through tools the workflow
offers them (docs/workflows.md).

The workflow adds its tools to the step's agent (``AgentRequest.workflow_tools``: offered
beside the agent's own, their calls end the agent's answer) and acts on the calls itself,
as a caller does with its own tools:

- ``handoff``: each agent is offered ``transfer_to_<agent>`` for every other agent of the
  workflow. A call hands the conversation over: the next agent gets the caller's messages,
  what the earlier agents said, and a note naming who handed over and why. After
  ``max_handoffs`` no transfer is offered any more, so the agent then answers itself.
- ``supervisor``: the supervisor agent is offered one tool per agent (named after it, its
  description the agent's). Each call runs that agent on the call's ``task`` as a child
  step (calls of one turn run at once), and its answer comes back as the tool's result; a
  failed agent comes back as an error result, for the supervisor to handle. Past
  ``max_delegations`` a call gets an error result instead of running.

Every agent turn is one checkpointed step, as in the other patterns, so a resumed run
replays the turns already taken and goes on from the first one that was not.
"""

from __future__ import annotations

import json
from typing import Any

from service.config.workflows_model import HandoffConfig, SupervisorConfig
from service.domain import Message, Role, TextPart, Tool, ToolCall
from service.workflows.events import StepResult
from service.workflows.execute import RunContext, StepFailed, limit
from service.workflows.ids import safe_name
from service.workflows.patterns import BranchStarter, Child, run_children

TRANSFER_PREFIX = "transfer_to_"
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"task": {"type": "string", "description": "what the agent is asked to do"}},
    "required": ["task"],
}
REASON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": {"type": "string", "description": "why it is handed over"}},
}


def transfer_tools(agents: list[str], current: str, described: dict[str, str]) -> dict[str, Tool]:
    """The handoff tools offered to ``current``: tool name → tool, one per other agent."""
    tools: dict[str, Tool] = {}
    for agent in agents:
        if agent == current:
            continue
        name = safe_name(agent, prefix=TRANSFER_PREFIX)
        about = described.get(agent) or f"the agent {agent}"
        tools[name] = Tool(name, f"Hand the conversation to {agent}: {about}", REASON_SCHEMA)
    return tools


def delegate_tools(agents: list[str], described: dict[str, str]) -> dict[str, Tool]:
    """The supervisor's tools: tool name → tool, one per agent."""
    return {
        safe_name(agent): Tool(
            safe_name(agent), described.get(agent) or f"Ask the agent {agent}.", TASK_SCHEMA
        )
        for agent in agents
    }


def _argument(call: ToolCall, name: str) -> str | None:
    """The string argument ``name`` of ``call``, or None when its arguments are not a JSON
    object with a string there."""
    try:
        arguments = json.loads(call.arguments_json or "{}")
    except (ValueError, RecursionError):  # RecursionError: deep nesting
        return None
    value = arguments.get(name) if isinstance(arguments, dict) else None
    return value if isinstance(value, str) else None


def _said(result: StepResult) -> tuple[Message, ...]:
    """What an agent said in a step, as the next agent sees it (no tool calls: they were
    the workflow's)."""
    if not result.text:
        return ()
    return (Message(Role.ASSISTANT, (TextPart(result.text),)),)


async def handoff(ctx: RunContext, described: dict[str, str]) -> StepResult:
    definition = ctx.spec.definition
    assert isinstance(definition, HandoffConfig)
    agents = list(dict.fromkeys([definition.start, *definition.agents]))
    conversation = list(ctx.run.messages)
    current = definition.start
    handoffs = 0
    turn = 0
    while True:
        turn += 1
        ctx.count_step()
        offered = (
            transfer_tools(agents, current, described) if handoffs < definition.max_handoffs else {}
        )
        step_id = safe_name(f"{turn}-{current}")
        messages = ctx.with_memory(tuple(conversation), read=True)
        result = await ctx.agent_step(step_id, current, messages, tools=tuple(offered.values()))
        if not result.ok:
            raise StepFailed(result)
        transfer = next((c for c in result.tool_calls if c.name in offered), None)
        if transfer is None:
            return result
        handoffs += 1
        target = next(a for a in agents if safe_name(a, prefix=TRANSFER_PREFIX) == transfer.name)
        reason = _argument(transfer, "reason")
        note = f"{current} handed this conversation to you ({target})" + (
            f": {reason}" if reason else "."
        )
        conversation += [*_said(result), Message(Role.SYSTEM, (TextPart(note),))]
        current = target


async def supervisor(
    ctx: RunContext, start_branch: BranchStarter, described: dict[str, str]
) -> StepResult:
    definition = ctx.spec.definition
    assert isinstance(definition, SupervisorConfig)
    limits = definition.limits
    tools = delegate_tools(definition.agents, described)
    agent_of = {safe_name(a): a for a in definition.agents}
    conversation = list(ctx.run.messages)
    delegations = 0
    turn = 0
    while True:
        turn += 1
        ctx.count_step()
        offered = tools if delegations < definition.max_delegations else {}
        messages = ctx.with_memory(tuple(conversation), read=True)
        result = await ctx.agent_step(
            f"supervisor-{turn}", definition.supervisor, messages, tools=tuple(offered.values())
        )
        if not result.ok:
            raise StepFailed(result)
        calls = [c for c in result.tool_calls if c.name in offered]
        if not calls:
            return result
        if ctx.run.depth + 1 > limits.max_depth:
            raise limit(ctx.spec, "max_depth", limits.max_depth)
        answers: dict[str, str] = {}
        children: list[tuple[ToolCall, Child]] = []
        for call in calls:
            task = _argument(call, "task")
            if task is None:
                answers[call.id] = 'error: the arguments must be a JSON object {"task": "..."}'
            elif delegations >= definition.max_delegations or len(children) >= limits.max_fan_out:
                answers[call.id] = (
                    f"error: not run: this workflow's max_delegations "
                    f"({definition.max_delegations}) or max_fan_out ({limits.max_fan_out}) "
                    "is reached"
                )
            else:
                delegations += 1
                agent = agent_of[call.name]
                task_messages = (Message(Role.USER, (TextPart(task),)),)
                step_id = safe_name(f"{call.name}-{delegations}")
                children.append((call, Child(step_id, agent, ctx.with_memory(task_messages, True))))
        ctx.count_step(len(children))
        done = await run_children(ctx, start_branch, [child for _, child in children])
        for call, child in children:
            answer = done[child.step_id]
            if answer.ok:
                answers[call.id] = answer.text
                await ctx.remember(safe_name(child.agent), answer.text)
            else:
                error = answer.error
                answers[call.id] = f"error: {error.message if error else 'the agent failed'}"
        said = (TextPart(result.text),) if result.text else ()
        conversation.append(Message(Role.ASSISTANT, said, tuple(calls)))
        conversation += [
            Message(Role.TOOL, (TextPart(answers[c.id]),), tool_call_id=c.id) for c in calls
        ]
