"""Runs a unary call at most once per idempotency key within a TTL.

The first call with a key claims it (for as long as its deadline, plus a margin), runs, and
records its serialised answer for ``ttl_s``. A retry gets the recorded answer (nothing runs,
nothing is charged). A duplicate that arrives while the first runs waits for it, within its
own deadline. The same key with a different request is FailedPrecondition. A call that fails
frees its key, so a retry runs again: only answers are recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from service.deadline import Deadline
from service.errors import DeadlineExceeded, FailedPrecondition, SwitchboardError
from service.state.stores import IdempotencyStore

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 5.0
POLL_S = (0.01, 0.25)  # first and longest wait between looks at a pending key


def idempotency_key(tenant: str, key_id: str, request_id: str) -> str:
    return f"{quote(tenant, safe='')}:{quote(key_id, safe='')}:{quote(request_id, safe='')}"


class Idempotency:
    def __init__(self, store: IdempotencyStore, *, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s

    async def run(
        self,
        key: str,
        fingerprint: str,
        deadline: Deadline,
        work: Callable[[], Awaitable[bytes]],
    ) -> bytes:
        """The recorded answer for ``key``, or ``work()``'s, recorded.

        Raises:
            FailedPrecondition: ``key`` was used for a request with another fingerprint.
            DeadlineExceeded: ``deadline`` passed while waiting for the first call.
            Unavailable: the store is down. Anything ``work`` raises.
        """
        wait_s = POLL_S[0]
        while True:
            claim = await self._store.claim(key, fingerprint, deadline.remaining() + LEASE_MARGIN_S)
            if claim.state == "new":
                return await self._own(key, fingerprint, work)
            if claim.fingerprint and claim.fingerprint != fingerprint:
                raise FailedPrecondition(
                    "request_id was already used for a different request; "
                    "use a new request_id for a new request"
                )
            if claim.state == "done" and claim.result is not None:
                return claim.result
            remaining = deadline.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(
                    "deadline exceeded while waiting for the first call with this request_id"
                )
            # Polling: the first call may run on another replica.
            await asyncio.sleep(min(wait_s, remaining))
            wait_s = min(wait_s * 2, POLL_S[1])

    async def _own(self, key: str, fingerprint: str, work: Callable[[], Awaitable[bytes]]) -> bytes:
        try:
            result = await work()
        except BaseException:
            try:
                await self._store.abandon(key)
            except SwitchboardError as exc:  # the claim's lease expires on its own
                log.warning("could not free an idempotency key: %s", exc.message)
            raise
        try:
            await self._store.complete(key, fingerprint, result, self._ttl_s)
        except SwitchboardError as exc:
            log.warning("could not record an idempotent answer: %s", exc.message)
        return result
