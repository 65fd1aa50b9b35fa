"""The names of a workflow run's DBOS attributes: written as the run goes
(:mod:`service.workflows.execute`, :mod:`service.workflows.runs`) and read back into what
RunService shows (:mod:`service.workflows.records`). One place, so the writer and the reader
cannot drift apart."""

from __future__ import annotations

STEPS = "steps"  # how many steps have finished
UPDATED = "updated"  # when the last one finished (unix seconds, finer than DBOS's own)
ERROR = "error"  # a failed run's error message
WAITING = "waiting:"  # the prefix of the attributes that list a waiting step's approvals


def waiting_key(step_id: str) -> str:
    """The attribute that lists the approval ids step ``step_id`` waits for (one key per
    step: branches waiting at once do not overwrite each other)."""
    return WAITING + step_id
