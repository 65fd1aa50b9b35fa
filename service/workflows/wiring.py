"""Workflows joined to the server: built only when the config has some, because DBOS (a
process singleton, ~0.7 s of CPU to import) comes with them; their runs join RunService as
the kind ``workflow``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from service.approvals.gate import Gate
from service.config import Snapshot
from service.runs.kinds import RunKinds
from service.runs.service import Runs
from service.state import data_dir

if TYPE_CHECKING:
    from service.agents.runner import Runner
    from service.workflows.runs import Workflows


def build_workflows(
    snapshot: Snapshot,
    current: Callable[[], Snapshot],
    *,
    runner: Runner,
    gate: Gate,
    runs: Runs,
    kinds: RunKinds,
) -> Workflows | None:
    """The workflows of ``snapshot`` (``current``: the config now, read per run), on ``runner``,
    parking for approvals through ``gate``; registers their run kind on ``kinds``. None when
    ``snapshot`` has no workflows."""
    if not snapshot.workflows:
        return None
    from service.workflows.approvals import GateApprovals  # noqa: PLC0415
    from service.workflows.engine import Engine  # noqa: PLC0415
    from service.workflows.records import KIND  # noqa: PLC0415
    from service.workflows.run_kind import WorkflowRunKind  # noqa: PLC0415
    from service.workflows.runs import Workflows  # noqa: PLC0415

    engine = Engine(snapshot.state, data_dir(snapshot), snapshot.postgres_dsn)
    workflows = Workflows(
        lambda: dict(current().workflows),
        runner.stream,
        engine,
        descriptions=lambda: {n: a.description for n, a in current().agents.items()},
        approvals=GateApprovals(gate, runs),
    )
    kinds.register(KIND, WorkflowRunKind(workflows).kind())
    return workflows
