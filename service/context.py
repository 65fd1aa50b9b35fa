"""Per-call facts (request id, tenant, key id) in one frozen object held in a contextvar.

The first interceptor (or the servicer, when none runs) sets it; everything below reads it
through :func:`current`. Every piece of per-tenant state is keyed by ``tenant``.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class CallContext:
    request_id: str = ""
    tenant: str = DEFAULT_TENANT
    key_id: str = ""


_CURRENT: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "switchboard_call",
    default=CallContext(),  # noqa: B039 (frozen, so safe to share)
)


def current() -> CallContext:
    """The context of the call being served (a default one outside any call)."""
    return _CURRENT.get()


def bind(context: CallContext) -> contextvars.Token[CallContext]:
    """Make ``context`` current; give the token back to :func:`reset` when the call ends."""
    return _CURRENT.set(context)


def reset(token: contextvars.Token[CallContext]) -> None:
    _CURRENT.reset(token)
