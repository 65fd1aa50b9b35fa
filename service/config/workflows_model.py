"""The ``workflows:`` section: multi-agent workflows named beside the agents (docs/workflows.md).

Four kinds, one shape each::

    workflows:
      brief:                       # steps in order, each an agent
        kind: sequential
        steps:
          - {id: research, agent: researcher, memory_write: findings}
          - {id: write, agent: writer, input: "Notes: {steps.research}\\n\\nTask: {input}"}
      panel:                       # branches at once, then a merge
        kind: parallel
        branches:
          - {id: pro, agent: optimist}
          - {id: con, agent: critic, on_failure: continue}
        merge: {agent: judge}      # or {concat: true, separator: "\\n\\n"}
      desk:                        # an agent may hand the conversation to another
        kind: handoff
        start: triage
        agents: [triage, billing, tech]
        max_handoffs: 3
      lead:                        # a supervisor whose tools are other agents
        kind: supervisor
        supervisor: planner
        agents: [researcher, writer]

A workflow's name shares one namespace with the agents: a call names either.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from service.config.base import FrozenModel

STEP_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MEMORY_KEY = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class LimitsConfig(FrozenModel):
    """Bounds on one run; a run that would pass one ends with RESOURCE_EXHAUSTED (reason
    WORKFLOW_LIMIT)."""

    max_steps: int = Field(32, ge=1, le=1000, description="agent steps in one run, all kinds")
    max_depth: int = Field(
        2, ge=1, le=8, description="nesting: a workflow step that calls a workflow adds one"
    )
    max_fan_out: int = Field(8, ge=1, le=64, description="branches running at once")


class StepConfig(FrozenModel):
    """One agent call of a workflow."""

    id: str | None = Field(None, pattern=STEP_ID, description="default: the agent's name")
    agent: str = Field(min_length=1)
    input: str | None = Field(
        None,
        description="template of the step's user message: {input}, {previous}, "
        "{steps.<id>}, {memory.<key>} ({{ and }} for braces); unset: the caller's "
        "messages (first step or branch) or the previous step's output",
    )
    memory_write: str | None = Field(
        None, pattern=MEMORY_KEY, description="store the step's answer in the run's memory"
    )
    memory_read: bool = Field(
        True, description="show the run's memory to the agent (a system message) when not empty"
    )

    @property
    def step_id(self) -> str:
        return self.id or self.agent


class BranchConfig(StepConfig):
    on_failure: Literal["fail", "continue"] = Field(
        "fail", description="fail the run, or merge without this branch"
    )


class MergeConfig(FrozenModel):
    """How a parallel workflow's branch answers become one: an agent that sees them all,
    or their concatenation in branch order."""

    agent: str | None = None
    input: str | None = Field(
        None, description="template for the merge agent (default: every branch's answer)"
    )
    concat: bool = False
    separator: str = "\n\n"
    memory_write: str | None = Field(None, pattern=MEMORY_KEY)

    @model_validator(mode="after")
    def _one_way(self) -> MergeConfig:
        if (self.agent is None) == (not self.concat):
            raise ValueError("give exactly one of 'agent' or 'concat: true'")
        return self


class _Common(FrozenModel):
    description: str = ""
    version: str | None = Field(None, min_length=1, max_length=64)
    limits: LimitsConfig = LimitsConfig()
    timeout_s: float = Field(
        600.0, gt=0, description="a run's own deadline (a resumed run has no caller's)"
    )


class SequentialConfig(_Common):
    kind: Literal["sequential"]
    steps: list[StepConfig] = Field(min_length=1)


class ParallelConfig(_Common):
    kind: Literal["parallel"]
    branches: list[BranchConfig] = Field(min_length=1)
    merge: MergeConfig = MergeConfig(concat=True)


class HandoffConfig(_Common):
    kind: Literal["handoff"]
    start: str = Field(min_length=1, description="the agent that answers first")
    agents: list[str] = Field(min_length=1, description="the agents a handoff may go to")
    max_handoffs: int = Field(4, ge=0, le=100)


class SupervisorConfig(_Common):
    kind: Literal["supervisor"]
    supervisor: str = Field(min_length=1)
    agents: list[str] = Field(min_length=1, description="offered to the supervisor as tools")
    max_delegations: int = Field(8, ge=1, le=200)


WorkflowConfig = Annotated[
    SequentialConfig | ParallelConfig | HandoffConfig | SupervisorConfig,
    Field(discriminator="kind"),
]


def step_agents(workflow: WorkflowConfig) -> list[tuple[str, str]]:
    """(field path, agent name) of every agent ``workflow`` calls."""
    match workflow:
        case SequentialConfig():
            return [(f"steps[{i}].agent", s.agent) for i, s in enumerate(workflow.steps)]
        case ParallelConfig():
            found = [(f"branches[{i}].agent", b.agent) for i, b in enumerate(workflow.branches)]
            if workflow.merge.agent is not None:
                found.append(("merge.agent", workflow.merge.agent))
            return found
        case HandoffConfig():
            return [("start", workflow.start)] + [
                (f"agents[{i}]", a) for i, a in enumerate(workflow.agents)
            ]
    assert isinstance(workflow, SupervisorConfig)
    return [("supervisor", workflow.supervisor)] + [
        (f"agents[{i}]", a) for i, a in enumerate(workflow.agents)
    ]


def check_workflows(workflows: dict[str, WorkflowConfig], agents: set[str]) -> None:
    """Every agent a workflow names exists, step ids are unique, templates only name earlier
    steps, and no workflow shares an agent's name.

    Raises:
        ValueError: naming the field (``workflows.<name>.<path>``) and what is wrong.
    """
    from service.workflows.template import template_problem  # noqa: PLC0415 (no cycle)

    for name, workflow in workflows.items():
        where = f"workflows.{name}"
        if name in agents:
            raise ValueError(f"{where}: an agent has this name (one namespace for both)")
        for path, agent in step_agents(workflow):
            if agent not in agents:
                raise ValueError(
                    f"{where}.{path}: no agent named {agent!r} "
                    f"(agents: {', '.join(sorted(agents)) or 'none'})"
                )
        if isinstance(workflow, HandoffConfig | SupervisorConfig):
            _check_delegation(where, workflow)
            continue
        steps: list[StepConfig] = []
        if isinstance(workflow, SequentialConfig):
            steps = list(workflow.steps)
        elif isinstance(workflow, ParallelConfig):
            steps = list(workflow.branches)
            if len(steps) > workflow.limits.max_fan_out:
                raise ValueError(
                    f"{where}.branches: {len(steps)} branches, over limits.max_fan_out "
                    f"({workflow.limits.max_fan_out})"
                )
        seen: list[str] = []
        for i, step in enumerate(steps):
            if step.step_id in seen:
                raise ValueError(f"{where}: step id {step.step_id!r} is used twice")
            earlier = seen if isinstance(workflow, SequentialConfig) else []
            if step.input is not None:
                problem = template_problem(step.input, earlier, first=not earlier)
                if problem:
                    label = "steps" if isinstance(workflow, SequentialConfig) else "branches"
                    raise ValueError(f"{where}.{label}[{i}].input: {problem}")
            seen.append(step.step_id)
        if isinstance(workflow, ParallelConfig) and workflow.merge.input is not None:
            problem = template_problem(workflow.merge.input, seen, first=True, merge=True)
            if problem:
                raise ValueError(f"{where}.merge.input: {problem}")


def _check_delegation(where: str, workflow: HandoffConfig | SupervisorConfig) -> None:
    """The tools a handoff or supervisor workflow offers are named after its agents: two
    agents whose names make the same tool name are refused, and so is a supervisor that
    would delegate to itself."""
    from service.workflows.ids import safe_name  # noqa: PLC0415 (no cycle)

    if isinstance(workflow, SupervisorConfig) and workflow.supervisor in workflow.agents:
        raise ValueError(f"{where}.agents: the supervisor {workflow.supervisor!r} is one of them")
    seen: dict[str, str] = {}
    for i, agent in enumerate(workflow.agents):
        tool = safe_name(agent)
        if seen.get(tool, agent) != agent:
            raise ValueError(
                f"{where}.agents[{i}]: {agent!r} and {seen[tool]!r} make the same tool name "
                f"{tool!r} (tool names keep letters, digits, '_' and '-')"
            )
        seen[tool] = agent
