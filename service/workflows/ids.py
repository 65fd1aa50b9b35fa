"""Run ids (``run_<32 hex>``, new or derived from a caller's request id) and the names a
workflow makes from agents' names. No DBOS import: the API layer and the config use these
without loading the durable-execution library."""

from __future__ import annotations

import hashlib
import re
import uuid

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex}"


def run_id_for(tenant: str, key_id: str, request_id: str) -> str:
    """The run id of an Invoke that names ``request_id``: the same for its retries."""
    digest = hashlib.sha256(f"{tenant}\0{key_id}\0{request_id}".encode()).hexdigest()
    return f"run_{digest[:32]}"


def safe_name(text: str, *, prefix: str = "") -> str:
    """``prefix + text`` as a tool name or step id (letters, digits, ``_``, ``-``; at most
    64 characters)."""
    return (prefix + _UNSAFE.sub("_", text))[:64]
