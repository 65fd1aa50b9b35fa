"""How a workflow run is tagged in DBOS's own table of workflows: DBOS is the run's durable
record. A run starts with the attributes :func:`tag` gives (its tenant, workflow, request id
and key), and its DBOS user is its tenant (a column DBOS filters on with either backend:
what a tenant-scoped listing of runs will use).
"""

from __future__ import annotations

import time
from typing import Any

from service.workflows.execute import RUN_FUNCTION


def tag(tenant: str, workflow: str, request_id: str, key_id: str) -> dict[str, Any]:
    """The attributes a run starts with (``created``: unix seconds, finer than DBOS's own
    created time, which SQLite keeps to the second)."""
    return {
        "tenant": tenant,
        "workflow": workflow,
        "request_id": request_id,
        "key_id": key_id,
        "created": time.time(),
    }


def is_run_of(status: Any, tenant: str) -> bool:
    """Whether ``status`` (a DBOS workflow status) is a workflow run, not a branch, of
    ``tenant``."""
    return bool(status.name == RUN_FUNCTION and (status.attributes or {}).get("tenant") == tenant)
