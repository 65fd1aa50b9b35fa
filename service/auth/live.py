"""The keys a replica accepts now: the config's (keys file, ``auth.keys_env``) and the state
store's, refreshed every ``auth.refresh_interval_s``.

Each refresh asks the store for the keys written since the last revision it saw (one indexed
query that usually returns nothing), so a key created, revoked or rotated on any replica, or
with ``switchboard keys``, is taken by every replica within one interval (0.5 s by default).
When the store cannot be read, the replica keeps the keys it has (a revocation then waits for
the store), logs it once per outage, and tries again at the next interval.

The auth layer asks :meth:`LiveKeys.policy` on every call: it returns a cached policy,
rebuilt only when the config's auth or the store's keys changed. A key this replica does not
know may have been made a moment ago on another replica or worker: before refusing it, the
auth layer awaits :meth:`LiveKeys.catch_up`, a store read that started after the call
arrived, so a new key works on its first call everywhere. Unknown keys share those reads, at
most one per ``CATCH_UP_GAP_S``, so a flood of bad keys costs the store at most
1/``CATCH_UP_GAP_S`` indexed reads a second per process. A revocation still takes up to one
interval to reach other replicas (a known key is not re-read per call).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from service.auth.keys import ApiKey, KeyRing
from service.auth.policy import AuthPolicy
from service.errors import Unavailable
from service.state.admin_store import AdminStore

log = logging.getLogger(__name__)

CATCH_UP_GAP_S = 0.05
"""Seconds between two store reads made for unknown keys (per process)."""


class LiveKeys:
    """See the module docstring."""

    def __init__(self, store: AdminStore, config: Callable[[], AuthPolicy]) -> None:
        """``config``: the current snapshot's auth policy (its keys are the read-only ones)."""
        self._store = store
        self._config = config
        self._stored: dict[str, ApiKey] = {}
        self._revision = 0
        self._built_from: AuthPolicy | None = None
        self._built_revision = -1
        self._policy = AuthPolicy()
        self._failing = False
        self._refreshing = asyncio.Lock()  # one read at a time: a late one must not undo a newer
        self._read_started = -float("inf")  # monotonic start of the newest store read
        self._catching_up: asyncio.Future[None] | None = None

    @property
    def revision(self) -> int:
        """The store's key revision this replica has taken."""
        return self._revision

    def policy(self) -> AuthPolicy:
        """The config's policy with the store's keys added to its ring."""
        config = self._config()
        if config is not self._built_from or self._revision != self._built_revision:
            ring = KeyRing([*config.keys, *self._stored.values()])
            self._policy = dataclasses.replace(config, keys=ring)
            self._built_from, self._built_revision = config, self._revision
        return self._policy

    def read_only(self) -> list[ApiKey]:
        """The keys of the keys file and environment (revoked ones included)."""
        return list(self._config().keys.every)

    async def refresh(self) -> bool:
        """Take what changed in the store; True when something did.

        Raises:
            Unavailable: the store cannot be read.
        """
        async with self._refreshing:
            self._read_started = time.monotonic()
            revision, changed = await self._store.keys_since(self._revision)
            for record in changed:
                self._stored[record.id] = record
            self._revision = revision
        return bool(changed)

    async def catch_up(self) -> bool:
        """Wait for a store read that started after this call; True when the keys changed
        meanwhile (the caller then checks its key again). False when the store cannot be
        read: the caller refuses with the keys it has."""
        asked, before = time.monotonic(), self._revision
        while self._read_started < asked:
            if self._catching_up is None:
                self._catching_up = asyncio.ensure_future(self._read_after_gap())
            try:
                await asyncio.shield(self._catching_up)
            except Unavailable:
                return False
        return self._revision != before

    async def _read_after_gap(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._read_started + CATCH_UP_GAP_S - time.monotonic()))
            await self.refresh()
        finally:
            self._catching_up = None

    async def run(self, interval_s: Callable[[], float]) -> None:
        """Refresh every ``interval_s()`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval_s())
            try:
                await self.refresh()
            except Unavailable as exc:
                if not self._failing:
                    log.warning("cannot refresh API keys from the state store: %s", exc.message)
                self._failing = True
            else:
                if self._failing:
                    log.info("API keys refreshed from the state store again")
                self._failing = False
