"""The kinds of run and what RunService does with each: a per-kind registry, so an agent's
tool loop (kind ``agent``, registered by the composition root) and a workflow (kind
``workflow``, registered by the workflow engine) are read, resumed, cancelled and attached
to through one service.

A kind registers a :class:`RunKind`: ``resume`` continues a parked run of that kind
(ResumeRun, and Stream with ``run_id`` and messages), ``attach`` streams a run's events
(Stream with ``run_id``: what it did so far, then live to its end), ``cancel`` stops work
the kind holds outside the run store (the store's row is cancelled by RunService first).
Each gets the stored record (the caller's tenant's: RunService looked it up) and is called
within the caller's context (tenant, key, request id) and deadline.

A kind whose runs live in a record of their own (a workflow's is DBOS's table of workflows:
no second copy in the run store) also registers ``records``: RunService reads, lists and
pages its runs there, and its ``cancel`` does the cancelling (the run store has no row).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.deadline import Deadline
from service.domain import Message
from service.errors import FailedPrecondition
from service.runs.records import RunRecord, RunState
from service.workflows.events import RunEvent  # an agent's events, and a workflow's steps

Resume = Callable[[RunRecord, Sequence[Message], Deadline], AsyncGenerator[RunEvent, None]]
Attach = Callable[[RunRecord, Deadline], AsyncGenerator[RunEvent, None]]
Cancel = Callable[[RunRecord], Awaitable[None]]


class RunRecords(Protocol):
    """Where a kind keeps its runs when not in the run store (tenant-scoped, like it)."""

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        """``tenant``'s run ``run_id`` of this kind, or None."""
        ...

    async def list(
        self, tenant: str, *, before: str, limit: int, state: RunState | None
    ) -> list[RunRecord]:
        """Up to ``limit`` of ``tenant``'s runs of this kind, newest first (ordered by
        (created_at, run_id) descending), after the run ``before`` (a run id; "": from the
        newest), in ``state`` if given."""
        ...


async def _nothing(run: RunRecord) -> None:
    return None


@dataclass(frozen=True, slots=True)
class RunKind:
    """What RunService calls for one kind (see the module docstring). ``resume`` and
    ``attach`` yield the run's events as AgentService.Stream does (one Start, ..., one
    Finish: its ``run_id`` set, reason APPROVAL_PENDING if it parked again)."""

    resume: Resume
    attach: Attach
    cancel: Cancel = _nothing
    records: RunRecords | None = None  # None: its runs are in the run store


class RunKinds:
    """The registry: one :class:`RunKind` per kind name."""

    def __init__(self) -> None:
        self._kinds: dict[str, RunKind] = {}

    def register(self, kind: str, handlers: RunKind) -> None:
        """Serve runs of ``kind`` with ``handlers`` (a later registration replaces it)."""
        self._kinds[kind] = handlers

    def with_records(self) -> list[tuple[str, RunRecords]]:
        """The kinds that keep their runs themselves, with where."""
        return [(k, h.records) for k, h in self._kinds.items() if h.records is not None]

    def of(self, run: RunRecord) -> RunKind:
        """The handlers of ``run``'s kind.

        Raises:
            FailedPrecondition: no handler for that kind in this server (its config has no
                workflows, say).
        """
        found = self._kinds.get(run.kind)
        if found is None:
            raise FailedPrecondition(f"this server does not run {run.kind!r} runs").about(
                run_id=run.run_id, kind=run.kind
            )
        return found
