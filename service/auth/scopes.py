"""Key scopes: what a key may do beyond calling its agents.

``admin``: the AdminService (keys of every tenant, usage of every tenant, targets) and the web
console. ``approver``: the ApprovalService (list and decide the tenant's tool-call
approvals). A method under one of :data:`SCOPED_SERVICES` needs a key with that scope
(PERMISSION_DENIED otherwise); when auth is off (loopback only) nothing is checked.
"""

from __future__ import annotations

ADMIN = "admin"
APPROVER = "approver"
KNOWN_SCOPES = frozenset({ADMIN, APPROVER})
SCOPED_SERVICES: tuple[tuple[str, str], ...] = (
    ("/switchboard.v1.AdminService/", ADMIN),
    ("/switchboard.v1.ApprovalService/", APPROVER),
)


def scope_for(method: str) -> str | None:
    """The scope ``method`` (``/package.Service/Method``) needs, or None."""
    for prefix, scope in SCOPED_SERVICES:
        if method.startswith(prefix):
            return scope
    return None


def unknown_scopes(scopes: frozenset[str] | set[str] | list[str]) -> list[str]:
    """The scopes of ``scopes`` this server does not know, sorted."""
    return sorted(set(scopes) - KNOWN_SCOPES)
