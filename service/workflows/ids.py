"""Run ids: ``run_<32 hex>``, new or derived from a caller's request id (no DBOS import, so
the API layer can name them without loading the durable-execution library)."""

from __future__ import annotations

import hashlib
import uuid


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def run_id_for(tenant: str, key_id: str, request_id: str) -> str:
    """The run id of an Invoke that names ``request_id``: the same for its retries."""
    digest = hashlib.sha256(f"{tenant}\0{key_id}\0{request_id}".encode()).hexdigest()
    return f"run_{digest[:32]}"
