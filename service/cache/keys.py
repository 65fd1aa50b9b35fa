"""Whether a call uses the cache, and its key: a hash over tenant, agent, agent version, the
normalised messages the model sees (history included), the merged parameters and the caller's
tools. The agent's own prompt, tools and route are covered by its fingerprint (a hash of its
definition, kept even when the operator writes the version by hand)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Sequence

from service.agents.spec import AgentSpec
from service.domain import Message, Parameters, Tool
from service.errors import InvalidArgument
from service.sessions.codec import message_dict


def wanted(agent: AgentSpec, requested: bool | None) -> bool:
    """Whether this call reads and fills the cache.

    Raises:
        InvalidArgument: the request sets ``cache`` for an agent whose cache is off.
    """
    mode = agent.cache.mode
    if mode == "off":
        if requested is not None:
            raise InvalidArgument.field("cache", f"agent {agent.name!r} has no response cache")
        return False
    if requested is not None:
        return requested
    return mode == "on"


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(type(value).__name__)


def cache_key(
    tenant: str,
    agent: AgentSpec,
    messages: Sequence[Message],
    parameters: Parameters,
    tools: Sequence[Tool],
) -> str:
    material = {
        "tenant": tenant,
        "agent": agent.name,
        "version": agent.version,
        # An operator may keep a hand-written version across a prompt edit: the fingerprint
        # (a hash of the definition) changes anyway.
        "fingerprint": agent.fingerprint,
        "messages": [message_dict(m) for m in messages],
        "parameters": dataclasses.asdict(parameters),
        "tools": [[t.name, t.description, t.parameters] for t in tools],
    }
    text = json.dumps(material, sort_keys=True, ensure_ascii=False, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()
