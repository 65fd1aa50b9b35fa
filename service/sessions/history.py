"""Sessions: the history a call continues, and the turn it appends after a success.

A session belongs to the agent that created it: only that agent continues it, and a caller
whose key may not call that agent cannot see it (reading, listing or deleting it is as if it
did not exist).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

from service.agents.spec import MemoryPolicy
from service.context import current
from service.domain import Message
from service.errors import FailedPrecondition, InvalidArgument, NotFound, Reason
from service.sessions import codec
from service.state.records import AuditEntry, SessionInfo, UsageRecord
from service.state.stores import SessionStore

MAX_SESSION_ID = 128
MAX_TURNS_READ = 10_000


def session_id_problem(session_id: str) -> str | None:
    """What is wrong with ``session_id``, or None: 1 to 128 printable characters (no control
    or format characters: ids go into logs, audit entries and store keys)."""
    if not session_id:
        return "the session id is required"
    if len(session_id) > MAX_SESSION_ID:
        return f"at most {MAX_SESSION_ID} characters"
    if not session_id.isprintable():
        return "printable characters only (no control characters)"
    return None


def check_id(session_id: str, field: str = "session_id") -> None:
    """Raises InvalidArgument unless ``session_id`` is well formed (see
    :func:`session_id_problem`)."""
    if (problem := session_id_problem(session_id)) is not None:
        raise InvalidArgument.field(field, problem)


class Sessions:
    """Tenant-scoped session operations over a SessionStore (whose errors pass through)."""

    def __init__(self, store: SessionStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def history(
        self, tenant: str, session_id: str, policy: MemoryPolicy, agent: str | None = None
    ) -> tuple[Message, ...]:
        """The newest turns' messages within the agent's window, oldest first; () if the
        session does not exist yet. With ``agent``, raises FailedPrecondition when the
        session belongs to another agent (named only if the caller may call it)."""
        check_id(session_id)
        stored = await self._store.turns(tenant, session_id, policy.max_turns)
        if agent is not None and stored and (owner := stored[-1].agent) != agent:
            whose = f"agent {owner!r}" if current().may_call(owner) else "another agent"
            raise FailedPrecondition(
                f"session {session_id!r} belongs to {whose}: only that agent continues it; "
                "use a new session_id"
            )
        turns = [codec.decode(t.messages_json) for t in stored]
        if policy.max_tokens is not None:
            # Drop the oldest turns until the rest fit, counting each turn once.
            sizes = [(codec.count_chars(t), len(t)) for t in turns]
            chars = sum(c for c, _ in sizes)
            count = sum(n for _, n in sizes)
            drop = 0
            while drop < len(turns) and codec.tokens_for(chars, count) > policy.max_tokens:
                chars -= sizes[drop][0]
                count -= sizes[drop][1]
                drop += 1
            turns = turns[drop:]
        return tuple(m for turn in turns for m in turn)

    async def append(
        self,
        tenant: str,
        session_id: str,
        agent: str,
        messages: Sequence[Message],
        answer: Message,
        *,
        usage: UsageRecord | None = None,
        audit: AuditEntry | None = None,
    ) -> None:
        """Store one turn (the request's messages and the answer) atomically, with the
        call's ledger line and audit entry when given."""
        await self._store.append(
            tenant,
            session_id,
            agent,
            codec.encode([*messages, answer]),
            self._clock(),
            usage=usage,
            audit=audit,
        )

    async def get(
        self, tenant: str, session_id: str, agents: Collection[str] | None = None
    ) -> tuple[SessionInfo, tuple[Message, ...]]:
        """The session and all its messages. Raises NotFound, also when ``agents`` (those
        the caller may call; None: all) leaves out the session's agent."""
        check_id(session_id, "id")
        info = await self._store.get(tenant, session_id)
        if info is None or (agents is not None and info.agent not in agents):
            raise NotFound(f"no session {session_id!r}", reason=Reason.SESSION_NOT_FOUND)
        turns = await self._store.turns(tenant, session_id, MAX_TURNS_READ)
        return info, tuple(m for t in turns for m in codec.decode(t.messages_json))

    async def list(
        self, tenant: str, after: str, limit: int, agents: Collection[str] | None = None
    ) -> list[SessionInfo]:
        """Filtered in the store, so pages (by session id) stay full and tokens stay valid."""
        return await self._store.list_sessions(tenant, after, limit, agents)

    async def delete(
        self, tenant: str, session_id: str, agents: Collection[str] | None = None
    ) -> None:
        """Raises NotFound when the tenant has no such session, or ``agents`` (those the
        caller may call; None: all) leaves out its agent."""
        check_id(session_id, "id")
        if agents is not None:
            info = await self._store.get(tenant, session_id)
            if info is None or info.agent not in agents:
                raise NotFound(f"no session {session_id!r}", reason=Reason.SESSION_NOT_FOUND)
        if not await self._store.delete(tenant, session_id):
            raise NotFound(f"no session {session_id!r}", reason=Reason.SESSION_NOT_FOUND)
