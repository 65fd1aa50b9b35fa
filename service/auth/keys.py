"""API keys: made here, stored only as hashes, checked in constant time.

A key looks like ``sb_<id>_<secret>``: ``id`` is 12 hex digits (not secret: it names the key in
lists, logs and limits), ``secret`` is 32 random bytes. Only ``sha256(key)`` is stored. A fast
hash is enough because the secret has 256 bits of entropy: nobody can guess it offline, so a
slow password hash (bcrypt, argon2) would only add milliseconds to every call.

Nothing here does I/O except :func:`read_keys_file` and :func:`write_keys_file`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

KEY_PREFIX = "sb_"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ANY_AGENT = "*"
_ID_LENGTH = 12
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key's record: what it is bound to, never the key itself. Times are Unix seconds.

    ``source`` says where it lives: ``store`` (the state store, managed through AdminService
    and ``switchboard keys --config``), ``file`` (the read-only keys file) or ``env``."""

    id: str
    tenant: str
    sha256: str
    agents: frozenset[str] | None = None  # None: every agent
    scopes: frozenset[str] = frozenset()
    created_at: float = 0.0
    revoked_at: float | None = None
    note: str = ""
    expires_at: float | None = None  # None: never
    source: str = "file"
    rotated_from: str = ""  # the id of the key this one replaced (RotateKey)

    def may_call(self, agent: str) -> bool:
        return self.agents is None or agent in self.agents

    def active(self, now: float) -> bool:
        """Neither revoked nor past its expiry at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(
    tenant: str,
    *,
    agents: Iterable[str] = (ANY_AGENT,),
    scopes: Iterable[str] = (),
    note: str = "",
    now: float | None = None,
    expires_at: float | None = None,
    source: str = "file",
    rotated_from: str = "",
) -> tuple[str, ApiKey]:
    """A fresh key and its record. The key is shown once to whoever asked for it."""
    key_id = secrets.token_hex(_ID_LENGTH // 2)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    allowed = frozenset(agents)
    record = ApiKey(
        id=key_id,
        tenant=tenant,
        sha256=hash_key(key),
        agents=None if ANY_AGENT in allowed else allowed,
        scopes=frozenset(scopes),
        created_at=float(int(time.time() if now is None else now)),
        note=note,
        expires_at=expires_at,
        source=source,
        rotated_from=rotated_from,
    )
    return key, record


class KeyRing:
    """The unrevoked keys, by id. Immutable; rebuilt on reload and when the store's keys
    change. Expiry is checked at each verification."""

    __slots__ = ("_by_id", "every")

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self.every = tuple(keys)  # revoked ones too (listed by AdminService)
        self._by_id = {k.id: k for k in self.every if k.revoked_at is None}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[ApiKey]:
        return iter(self._by_id.values())

    def verify(self, presented: str, now: float | None = None) -> ApiKey | None:
        """The record of ``presented`` if it is an active key at ``now`` (default: the wall
        clock), else None.

        The hash comparison is constant-time; an unknown id is compared against a dummy hash
        so both paths cost the same.
        """
        key_id = _id_of(presented)
        record = self._by_id.get(key_id) if key_id else None
        expected = record.sha256 if record is not None else _DUMMY_HASH
        matches = hmac.compare_digest(hash_key(presented), expected)
        if not matches or record is None:
            return None
        return record if record.active(time.time() if now is None else now) else None


def _id_of(presented: str) -> str:
    if not presented.startswith(KEY_PREFIX):
        return ""
    key_id, _, secret = presented[len(KEY_PREFIX) :].partition("_")
    return key_id if len(key_id) == _ID_LENGTH and secret else ""


# The keys file ---------------------------------------------------------------------------------


class _KeyModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{12}$")
    tenant: str = Field(pattern=TENANT_PATTERN.pattern)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    agents: list[str] = Field(default_factory=lambda: [ANY_AGENT])
    scopes: list[str] = Field(default_factory=list)
    created_at: str = ""
    revoked_at: str | None = None
    expires_at: str | None = None
    note: str = ""


class _KeysFileModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: list[_KeyModel] = Field(default_factory=list)


def parse_keys(text: str, where: str) -> list[ApiKey]:
    """The records in a keys file's YAML text.

    Raises:
        ValueError: not YAML, or a record is invalid (the message names ``where`` and the
            field, never a hash).
    """
    try:
        raw = yaml.safe_load(text) or {}
        parsed = _KeysFileModel.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}: invalid keys: {problems}") from None
    seen: set[str] = set()
    records = []
    for k in parsed.keys:
        if k.id in seen:
            raise ValueError(f"{where}: key id {k.id} appears twice")
        seen.add(k.id)
        records.append(
            ApiKey(
                id=k.id,
                tenant=k.tenant,
                sha256=k.sha256,
                agents=None if ANY_AGENT in k.agents else frozenset(k.agents),
                scopes=frozenset(k.scopes),
                created_at=_seconds(k.created_at, where, "created_at") or 0.0,
                revoked_at=_seconds(k.revoked_at, where, "revoked_at"),
                note=k.note,
                expires_at=_seconds(k.expires_at, where, "expires_at"),
                source="env" if where.startswith("$") else "file",
            )
        )
    return records


def read_keys_file(path: str | Path) -> list[ApiKey]:
    """The records in the keys file at ``path``; a missing file holds no keys.

    Raises:
        ValueError: the file is unreadable or invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ValueError(f"{path}: cannot read keys file: {exc.strerror}") from exc
    return parse_keys(text, str(path))


def write_keys_file(path: str | Path, keys: Iterable[ApiKey]) -> None:
    """Replace the keys file atomically (write a temporary file, then rename), mode 0600."""
    path = Path(path)
    records: list[dict[str, Any]] = [
        {
            "id": k.id,
            "tenant": k.tenant,
            "sha256": k.sha256,
            "agents": sorted(k.agents) if k.agents is not None else [ANY_AGENT],
            "scopes": sorted(k.scopes),
            "created_at": iso(k.created_at),
            "revoked_at": None if k.revoked_at is None else iso(k.revoked_at),
            **({} if k.expires_at is None else {"expires_at": iso(k.expires_at)}),
            "note": k.note,
        }
        for k in keys
    ]
    text = "# Switchboard API keys: hashes only, written by `switchboard keys`.\n" + yaml.safe_dump(
        {"keys": records}, sort_keys=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def iso(seconds: float) -> str:
    """``seconds`` (Unix time) as ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _seconds(text: str | None, where: str, field: str) -> float | None:
    """An ISO 8601 time of the keys file as Unix seconds (UTC when it names no zone).

    Raises:
        ValueError: not ISO 8601.
    """
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: {field}: not an ISO 8601 time: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def revoke(keys: Iterable[ApiKey], key_id: str, now: float | None = None) -> list[ApiKey]:
    """``keys`` with ``key_id`` marked revoked.

    Raises:
        KeyError: no active key has that id.
    """
    out = list(keys)
    for i, k in enumerate(out):
        if k.id == key_id and k.revoked_at is None:
            out[i] = replace(k, revoked_at=float(int(time.time() if now is None else now)))
            return out
    raise KeyError(key_id)
