"""A stored run's steps as the events a caller saw (Start, each step's deltas, approvals,
results and StepFinish), so a resumed run's stream and response tell the whole run, not
only what happened since the resume. Replayed steps are not charged again: only model calls
are, and a replay makes none."""

from __future__ import annotations

from service.agents.spec import AgentSpec
from service.domain import (
    Event,
    Finish,
    Start,
    StepFinish,
    StepTrace,
    TargetRef,
    TextDelta,
    TextPart,
    ToolCallDelta,
    UsageEvent,
)
from service.guards.check import merge_verdicts
from service.tools.run_state import LoopState


def replay(state: LoopState, agent: AgentSpec, request_id: str, *, ended: bool) -> list[Event]:
    """The events of ``state``'s steps. A parked step (``state.parked``) is replayed up to
    its approvals (its results and StepFinish come when it is settled); an ``ended`` run
    ends with its usage and Finish."""
    target = state.target or TargetRef("", "", "")
    events: list[Event] = [Start(request_id, agent.name, agent.version, target)]
    for i, t in enumerate(state.trace):
        open_step = state.parked is not None and i == len(state.trace) - 1
        events.extend(_step(t, open_step))
    if ended and state.trace:
        last = state.trace[-1]
        events.append(UsageEvent(state.usage))
        events.append(
            Finish(
                last.reason, state.attempts, False, last.target,
                merge_verdicts(state.verdicts), run_id=state.run_id,
            )
        )  # fmt: skip
    return events


def _step(t: StepTrace, open_step: bool) -> list[Event]:
    events: list[Event] = [TextDelta(p.text) for p in t.message.content if isinstance(p, TextPart)]
    events.extend(
        ToolCallDelta(i, c.id, c.name, c.arguments_json) for i, c in enumerate(t.message.tool_calls)
    )
    events.extend(t.approvals)
    if open_step:
        return events
    events.extend(t.results)
    events.append(StepFinish(t.step, t.reason, t.usage, t.target, t.attempts))
    return events
