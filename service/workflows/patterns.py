"""The patterns: how each kind of workflow turns a run into steps (docs/workflows.md).

Each returns the step whose answer is the run's answer. Steps happen in an order fixed by
the definition and the checkpointed outcomes, so a re-executed run asks for the same steps
in the same order and DBOS replays the finished ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, WorkflowHandleAsync

from service.config.workflows_model import (
    ParallelConfig,
    SequentialConfig,
    StepConfig,
)
from service.domain import FinishReason, Message, Role, TextPart
from service.sessions import codec
from service.workflows.events import StepFinish, StepResult, StepStart
from service.workflows.execute import RunContext, StepFailed, limit
from service.workflows.template import render

BranchStarter = Callable[[dict[str, Any]], Any]  # starts a branch child workflow
WAIT_POLL_S = 0.02  # how often DBOS looks for a finished branch


def user(text: str) -> tuple[Message, ...]:
    return (Message(Role.USER, (TextPart(text),)),)


def step_messages(
    ctx: RunContext, step: StepConfig, *, previous: StepResult | None, branches: str = ""
) -> tuple[Message, ...]:
    """A step's input: its template rendered, else the caller's messages (first step or a
    branch), else the previous step's answer; with the run's memory when it reads it."""
    if step.input is not None:
        text = render(
            step.input,
            input_text=ctx.run.input_text,
            previous=previous.text if previous else "",
            steps={r.step_id: r.text for r in ctx.results},
            memory=ctx.memory,
            branches=branches,
        )
        messages = user(text)
    elif previous is None:
        messages = ctx.run.messages
    else:
        messages = user(previous.text)
    return ctx.with_memory(messages, step.memory_read)


async def sequential(ctx: RunContext) -> StepResult:
    definition = ctx.spec.definition
    assert isinstance(definition, SequentialConfig)
    previous: StepResult | None = None
    for step in definition.steps:
        ctx.count_step()
        messages = step_messages(ctx, step, previous=previous)
        result = await ctx.agent_step(step.step_id, step.agent, messages)
        if not result.ok:
            raise StepFailed(result)
        await ctx.remember(step.memory_write, result.text)
        previous = result
    assert previous is not None
    return previous


@dataclass(frozen=True, slots=True)
class Child:
    """A step run as a child workflow (a parallel branch, a supervisor's delegation)."""

    step_id: str
    agent: str
    messages: tuple[Message, ...]


async def run_children(
    ctx: RunContext,
    start_branch: BranchStarter,
    children: list[Child],
    *,
    fails_run: Callable[[str], bool] = lambda step_id: False,
) -> dict[str, StepResult]:
    """Run ``children`` at once, each a child workflow whose start and finish go to the
    run's log; their results by step id. A failed child for which ``fails_run(step_id)``
    holds fails the run (StepFailed) and cancels the others still running."""
    handles: dict[str, WorkflowHandleAsync[dict[str, Any]]] = {}
    for child in children:
        await ctx.log(StepStart(child.step_id, child.agent))
        payload = {
            "run": ctx.run.to_json(),
            "step_id": child.step_id,
            "agent": child.agent,
            "messages": codec.encode(child.messages),
        }
        handle = await start_branch(payload)
        handles[handle.workflow_id] = handle
    results: dict[str, StepResult] = {}
    try:
        while handles:
            done = await DBOS.wait_first_async(
                list(handles.values()), polling_interval_sec=WAIT_POLL_S
            )
            del handles[done.workflow_id]
            result = StepResult.from_json(await done.get_result())
            # A branch that waited for a person renewed its deadline: the run's follows.
            ctx.deadline_at = max(ctx.deadline_at, result.deadline_at)
            ctx.results.append(result)
            await ctx.log(StepFinish(result))
            results[result.step_id] = result
            if not result.ok and fails_run(result.step_id):
                raise StepFailed(result)
    except StepFailed:
        # A failed run stops its other children. (A cancelled one is cancelled whole by
        # whoever cancelled it; a task cut off by a shutdown must leave them to resume.)
        for handle in handles.values():
            await DBOS.cancel_workflow_async(handle.workflow_id)
        raise
    return results


async def parallel(ctx: RunContext, start_branch: BranchStarter) -> StepResult:
    """Every branch as a child workflow, at once (within max_fan_out); then the merge. A
    failed branch whose policy is ``fail`` fails the run and cancels the others."""
    definition = ctx.spec.definition
    assert isinstance(definition, ParallelConfig)
    limits = definition.limits
    if len(definition.branches) > limits.max_fan_out:
        raise limit(ctx.spec, "max_fan_out", limits.max_fan_out)
    if ctx.run.depth + 1 > limits.max_depth:
        raise limit(ctx.spec, "max_depth", limits.max_depth)
    ctx.count_step(len(definition.branches))
    policies = {b.step_id: b for b in definition.branches}
    children = [
        Child(b.step_id, b.agent, step_messages(ctx, b, previous=None)) for b in definition.branches
    ]
    results = await run_children(
        ctx, start_branch, children, fails_run=lambda s: policies[s].on_failure == "fail"
    )
    answers = {step_id: r for step_id, r in results.items() if r.ok}
    for branch in definition.branches:  # memory written in branch order: deterministic
        if branch.step_id in answers:
            await ctx.remember(branch.memory_write, answers[branch.step_id].text)
    return await _merge(ctx, definition, answers)


async def _merge(
    ctx: RunContext, definition: ParallelConfig, answers: dict[str, StepResult]
) -> StepResult:
    merge = definition.merge
    ordered = [answers[b.step_id] for b in definition.branches if b.step_id in answers]
    if merge.concat:
        text = merge.separator.join(r.text for r in ordered)
        await ctx.log(StepStart("merge", ""))
        result = StepResult("merge", "", text=text, finish_reason=FinishReason.STOP)
        ctx.results.append(result)
        await ctx.log(StepFinish(result))
        await ctx.remember(merge.memory_write, text)
        return result
    assert merge.agent is not None
    ctx.count_step()
    labelled = "\n\n".join(f"[{r.step_id}]\n{r.text}" for r in ordered)
    step = StepConfig(id="merge", agent=merge.agent, input=merge.input or "{branches}")
    messages = step_messages(ctx, step, previous=None, branches=labelled)
    result = await ctx.agent_step("merge", merge.agent, messages)
    if not result.ok:
        raise StepFailed(result)
    await ctx.remember(merge.memory_write, result.text)
    return result
