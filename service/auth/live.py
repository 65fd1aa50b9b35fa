"""The keys a replica accepts now: the config's (keys file, ``auth.keys_env``) and the state
store's, refreshed every ``auth.refresh_interval_s``.

Each refresh asks the store for the keys written since the last revision it saw (one indexed
query that usually returns nothing), so a key created, revoked or rotated on any replica, or
with ``switchboard keys``, is taken by every replica within one interval (0.5 s by default).
When the store cannot be read, the replica keeps the keys it has (a revocation then waits for
the store), logs it once per outage, and tries again at the next interval.

The auth layer asks :meth:`LiveKeys.policy` on every call: it returns a cached policy,
rebuilt only when the config's auth or the store's keys changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from service.auth.keys import ApiKey, KeyRing
from service.auth.policy import AuthPolicy
from service.errors import Unavailable
from service.state.admin_store import AdminStore

log = logging.getLogger(__name__)


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
            revision, changed = await self._store.keys_since(self._revision)
            for record in changed:
                self._stored[record.id] = record
            self._revision = revision
        return bool(changed)

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
