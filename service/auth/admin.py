"""Managing API keys: the one implementation behind AdminService and ``switchboard keys``.

Keys made here live in the state store (SQLite or PostgreSQL) and are picked up by every
replica within ``auth.refresh_interval_s`` (:mod:`service.auth.live`). Keys from the keys
file or ``auth.keys_env`` are listed beside them but are read-only: revoking or rotating one
is FAILED_PRECONDITION (edit the file). Every change is written to the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass

from service.auth.keys import ANY_AGENT, TENANT_PATTERN, ApiKey, new_key
from service.auth.scopes import KNOWN_SCOPES, unknown_scopes
from service.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Reason
from service.state.admin_store import AdminStore
from service.state.records import AuditEntry

MAX_NOTE = 256
MAX_GRACE_S = 30 * 86400.0
DEFAULT_GRACE_S = 86400.0


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, for the audit log (the entry goes to the changed key's tenant, with
    the actor's key id: ``cli`` for the command line) and the call's request id."""

    key_id: str
    request_id: str = ""


def key_violations(
    tenant: str,
    agents: Collection[str],
    scopes: Collection[str],
    note: str,
    *,
    known_agents: Collection[str],
    expires_at: float | None,
    now: float,
) -> list[FieldViolation]:
    """What is wrong with a new key's fields, in field order (none: it may be made). The
    one check for AdminService's CreateKey and ``switchboard keys create``, in either mode."""
    violations = []
    if not TENANT_PATTERN.match(tenant):
        violations.append(FieldViolation("tenant", "letters, digits, '_', '-', '.' (1 to 64)"))
    known = set(known_agents)
    for i, agent in enumerate(agents):
        if agent != ANY_AGENT and agent not in known:
            violations.append(
                FieldViolation(
                    f"agents[{i}]",
                    f"no agent named {agent[:64]!r} in the config "
                    f"(agents: {', '.join(sorted(known)) or 'none'})",
                )
            )
    unknown = unknown_scopes(list(scopes))
    if unknown:
        scopes_known = ", ".join(sorted(KNOWN_SCOPES))
        violations.append(FieldViolation("scopes", f"unknown scope {unknown[0][:64]!r} "
                                         f"(known: {scopes_known})"))  # fmt: skip
    if len(note) > MAX_NOTE:
        violations.append(FieldViolation("note", f"at most {MAX_NOTE} characters"))
    if expires_at is not None and expires_at <= now:
        violations.append(FieldViolation("expire_time", "must be in the future"))
    return violations


class KeyAdmin:
    """See the module docstring."""

    def __init__(
        self,
        store: AdminStore,
        *,
        agents: Callable[[], Collection[str]],
        read_only_keys: Callable[[], Iterable[ApiKey]],
        audit: Callable[[AuditEntry], Awaitable[None]],
        changed: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``agents``: the config's agent names now; ``read_only_keys``: the keys file's
        and environment's keys now (both read per call: reloads change them); ``changed``:
        awaited after each write (this replica takes the change at once, not at its next
        refresh)."""
        self._store = store
        self._changed = changed
        self._agents = agents
        self._read_only = read_only_keys
        self._audit = audit
        self._clock = clock

    async def create(
        self,
        actor: Actor,
        tenant: str,
        *,
        agents: Collection[str] = (),
        scopes: Collection[str] = (),
        note: str = "",
        expires_at: float | None = None,
    ) -> tuple[str, ApiKey]:
        """A new key (the secret, shown once, and its record).

        Raises:
            InvalidArgument: a bad tenant, an agent the config does not have, an unknown
                scope, a note too long, or an expiry not in the future.
        """
        now = self._clock()
        violations = key_violations(
            tenant, agents, scopes, note, known_agents=self._agents(), expires_at=expires_at,
            now=now,
        )  # fmt: skip
        if violations:
            raise InvalidArgument(f"{violations[0].field}: {violations[0].description}",
                                  violations)  # fmt: skip
        secret, record = new_key(
            tenant,
            agents=agents or (ANY_AGENT,),
            scopes=scopes,
            note=note,
            now=now,
            expires_at=expires_at,
            source="store",
        )
        await self._store.insert_key(record)
        await self._record(actor, "key.create", record)
        return secret, record

    async def get(self, key_id: str) -> ApiKey:
        """Raises NotFound: no key has that id (in the store or the read-only sources)."""
        record = await self._store.get_key(key_id)
        if record is None:
            record = next((k for k in self._read_only() if k.id == key_id), None)
        if record is None:
            raise NotFound(f"no API key with id {key_id[:64]!r}", reason=Reason.KEY_NOT_FOUND)
        return record

    async def list(
        self, tenant: str | None, after: str, limit: int, *, include_revoked: bool
    ) -> list[ApiKey]:
        """Keys from the store and the read-only sources with ids after ``after``, ordered
        by id, at most ``limit``."""
        stored = await self._store.list_keys(tenant, after, limit, include_revoked=include_revoked)
        others = [
            k
            for k in self._read_only()
            if k.id > after
            and (tenant is None or k.tenant == tenant)
            and (include_revoked or k.revoked_at is None)
        ]
        return sorted(stored + others, key=lambda k: k.id)[:limit]

    async def revoke(self, actor: Actor, key_id: str) -> ApiKey:
        """Revoke a store key (revoking it again changes nothing and returns it).

        Raises:
            NotFound: no such key.
            FailedPrecondition: the key comes from the keys file or the environment.
        """
        self._refuse_read_only(key_id, "revoke")
        record = await self._store.revoke_key(key_id, self._clock())
        if record is None:
            raise NotFound(f"no API key with id {key_id[:64]!r}", reason=Reason.KEY_NOT_FOUND)
        await self._record(actor, "key.revoke", record)
        return record

    async def rotate(
        self, actor: Actor, key_id: str, grace_s: float = DEFAULT_GRACE_S
    ) -> tuple[str, ApiKey, ApiKey]:
        """A new key with the old one's tenant, agents, scopes, note and expiry; the old one
        stays valid for ``grace_s`` more (or less, if it expires sooner). Returns the new
        secret, the new record and the old record as it is now.

        Raises:
            InvalidArgument: ``grace_s`` below 0 or above 30 days.
            NotFound: no such key.
            FailedPrecondition: the key is revoked, expired, or read-only.
        """
        if not 0 <= grace_s <= MAX_GRACE_S:
            raise InvalidArgument.field("grace_period", "between 0 and 30 days")
        self._refuse_read_only(key_id, "rotate")
        old = await self._store.get_key(key_id)
        if old is None:
            raise NotFound(f"no API key with id {key_id[:64]!r}", reason=Reason.KEY_NOT_FOUND)
        now = self._clock()
        if not old.active(now):
            raise FailedPrecondition(f"key {key_id} is revoked or expired: create a new one")
        secret, new = new_key(
            old.tenant,
            agents=old.agents if old.agents is not None else (ANY_AGENT,),
            scopes=old.scopes,
            note=old.note,
            now=now,
            expires_at=old.expires_at,
            source="store",
            rotated_from=old.id,
        )
        await self._store.insert_key(new, expire=(old.id, now + grace_s))
        await self._record(actor, "key.rotate", new)
        return secret, new, await self.get(old.id)

    def _refuse_read_only(self, key_id: str, verb: str) -> None:
        for k in self._read_only():
            if k.id == key_id:
                where = "auth.keys_env" if k.source == "env" else "the keys file"
                raise FailedPrecondition(
                    f"key {key_id} comes from {where}, which is read-only here: {verb} it "
                    "there (`switchboard keys --keys-file ...`)"
                )

    async def _record(self, actor: Actor, action: str, record: ApiKey) -> None:
        if self._changed is not None:
            await self._changed()
        await self._audit(
            AuditEntry(
                at=self._clock(),
                tenant=record.tenant,
                key_id=actor.key_id,
                request_id=actor.request_id,
                action=action,
                resource=f"api_key:{record.id}",
                outcome="ok",
            )
        )
