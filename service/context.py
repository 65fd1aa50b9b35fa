"""Per-call facts (request id, tenant, key id) in one frozen object held in a contextvar.

The first interceptor (or the servicer, when none runs) sets it; everything below reads it
through :func:`current`. Every piece of per-tenant state is keyed by ``tenant``.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass

DEFAULT_TENANT = "default"
MAX_REQUEST_ID = 128
# THE definition of a well-formed request id (caller's field or x-request-id header): it goes
# into idempotency keys, log lines and audit entries, so nothing else is let in.
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID}}}")


def request_id_problem(request_id: str) -> str | None:
    """What is wrong with ``request_id`` as a request id, or None when it is well formed."""
    if _REQUEST_ID.fullmatch(request_id):
        return None
    if len(request_id) > MAX_REQUEST_ID:
        return f"at most {MAX_REQUEST_ID} characters"
    return "only letters, digits and . _ : - (no spaces or other characters)"


@dataclass(frozen=True, slots=True)
class CallContext:
    request_id: str = ""
    tenant: str = DEFAULT_TENANT
    key_id: str = ""
    agents: frozenset[str] | None = None  # the agents the caller's key may call; None: all
    scopes: frozenset[str] = frozenset()  # the caller's key's scopes (service.auth.scopes)

    def may_call(self, agent: str) -> bool:
        return self.agents is None or agent in self.agents


_CURRENT: contextvars.ContextVar[CallContext] = contextvars.ContextVar(
    "switchboard_call",
    default=CallContext(),  # noqa: B039 (frozen, so safe to share)
)


def current() -> CallContext:
    """The context of the call being served (a default one outside any call)."""
    return _CURRENT.get()


def bind(context: CallContext) -> contextvars.Token[CallContext]:
    """Make ``context`` current; give the token back to :func:`reset` when the call ends.

    Within a call, a later interceptor (auth) may bind a context with more facts and drop
    its token: the first interceptor's :func:`reset` restores the value from before the call.
    """
    return _CURRENT.set(context)


def reset(token: contextvars.Token[CallContext]) -> None:
    _CURRENT.reset(token)
