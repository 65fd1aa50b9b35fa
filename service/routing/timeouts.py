"""The errors of an attempt's own time limits, beyond the call's deadline.

``first_token_timeout_s`` bounds the time from an attempt's start to its first event;
``idle_timeout_s`` the silence between two events once it answers (each per target and per
route, next to ``attempt_timeout_s``, which caps the whole attempt). Both are the upstream's
fault: retryable (before the commit) and counted against its breaker. The caller sees
UNAVAILABLE with reason ``UPSTREAM_TIMEOUT`` (the call's own deadline had not passed); the
upstream-call metric records the outcome as ``first_token_timeout`` or ``idle_timeout``.
"""

from __future__ import annotations

from service.errors import Reason, Unavailable


class FirstTokenTimeout(Unavailable):
    """The target sent no first event within its ``first_token_timeout_s``."""


class IdleTimeout(Unavailable):
    """The target fell silent mid-answer for longer than its ``idle_timeout_s``."""


def first_token_timeout(target: str, limit_s: float) -> FirstTokenTimeout:
    return FirstTokenTimeout(
        f"target {target!r} sent no first token within its first_token_timeout_s of {limit_s:g}s",
        reason=Reason.UPSTREAM_TIMEOUT,
    ).about(target=target)


def idle_timeout(target: str, limit_s: float) -> IdleTimeout:
    return IdleTimeout(
        f"target {target!r} sent nothing for its idle_timeout_s of {limit_s:g}s mid-answer",
        reason=Reason.UPSTREAM_TIMEOUT,
    ).about(target=target)
