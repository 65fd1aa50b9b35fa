"""Sessions: the history a call continues, and the turn it appends after a success."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from service.agents.spec import MemoryPolicy
from service.domain import Message
from service.errors import InvalidArgument, NotFound
from service.sessions import codec
from service.state.records import AuditEntry, SessionInfo, UsageRecord
from service.state.stores import SessionStore

MAX_SESSION_ID = 128
MAX_TURNS_READ = 10_000


def check_id(session_id: str, field: str = "session_id") -> None:
    """Raises InvalidArgument unless ``session_id`` is 1 to 128 characters."""
    if not session_id:
        raise InvalidArgument.field(field, "the session id is required")
    if len(session_id) > MAX_SESSION_ID:
        raise InvalidArgument.field(field, f"at most {MAX_SESSION_ID} characters")


class Sessions:
    """Tenant-scoped session operations over a SessionStore (whose errors pass through)."""

    def __init__(self, store: SessionStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def history(
        self, tenant: str, session_id: str, policy: MemoryPolicy
    ) -> tuple[Message, ...]:
        """The newest turns' messages within the agent's window, oldest first; () if the
        session does not exist yet."""
        check_id(session_id)
        turns = [codec.decode(t.messages_json) for t in await self._store.turns(
            tenant, session_id, policy.max_turns
        )]  # fmt: skip
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

    async def get(self, tenant: str, session_id: str) -> tuple[SessionInfo, tuple[Message, ...]]:
        """The session and all its messages. Raises NotFound."""
        check_id(session_id, "id")
        info = await self._store.get(tenant, session_id)
        if info is None:
            raise NotFound(f"no session {session_id!r}")
        turns = await self._store.turns(tenant, session_id, MAX_TURNS_READ)
        return info, tuple(m for t in turns for m in codec.decode(t.messages_json))

    async def list(self, tenant: str, after: str, limit: int) -> list[SessionInfo]:
        return await self._store.list_sessions(tenant, after, limit)

    async def delete(self, tenant: str, session_id: str) -> None:
        """Raises NotFound when the tenant has no such session."""
        check_id(session_id, "id")
        if not await self._store.delete(tenant, session_id):
            raise NotFound(f"no session {session_id!r}")
