"""Per-tenant and per-key limits: requests/min, tokens/min, concurrent streams.

Tokens are estimated before the call (request text, ~4 characters a token) and reconciled
with the real usage after it. Limits come from config: ``tenant`` and ``key`` defaults,
overridden per tenant name and per key id. When the backend fails, ``on_error`` decides:
``open`` lets calls through, ``closed`` refuses them (UNAVAILABLE); either way the failure is
logged and counted; after DOWN_AFTER_FAILURES failures in a row the backend is down, which
``on_state`` reports (health). While the backend is down, calls
do not wait on it: a probe owned by the limiter pings it every ``retry_after_error_s`` and
the limiter is back (exact decisions, health SERVING) as soon as one ping answers. A single
failed command is not an outage: the Redis client retries a dropped connection on a fresh one
(``service.state.redis_client``), so a Redis restart costs no call a wrong decision.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from service.config.chain_model import LimitsConfig, RateLimitsConfig
from service.errors import QuotaViolation, Reason, ResourceExhausted, Unavailable
from service.ratelimit.base import NEVER, Backend, BackendError, Rate, Slot
from service.retry_after import delay_seconds
from service.tasks import stop

log = logging.getLogger(__name__)

DOWN_AFTER_FAILURES = 3
"""Failed backend commands in a row that mark the backend down."""

REQUESTS = "requests_per_min"
TOKENS = "tokens_per_min"
STREAMS = "concurrent_streams"
_DESCRIPTIONS = {
    REQUESTS: "requests per minute",
    TOKENS: "tokens per minute",
    STREAMS: "concurrent streams",
}


@dataclass(frozen=True, slots=True)
class _Plan:
    """The limits binding one (tenant, key id), built once and cached: the request rates
    (cost 1), the token rates (cost filled in per call) and the stream slots."""

    requests: tuple[Rate, ...]
    tokens: tuple[Rate, ...]
    slots: tuple[Slot, ...]

    @classmethod
    def of(cls, subjects: list[tuple[str, str, LimitsConfig]]) -> _Plan:
        requests, tokens, slots = [], [], []
        for name, key, lim in subjects:
            if lim.requests_per_min:
                requests.append(Rate(f"{key}:r", lim.requests_per_min, 1, REQUESTS, name))
            if lim.tokens_per_min:
                tokens.append(Rate(f"{key}:tok", lim.tokens_per_min, 0, TOKENS, name))
            if lim.concurrent_streams:
                slots.append(Slot(f"{key}:s", lim.concurrent_streams, STREAMS, name))
        return cls(tuple(requests), tuple(tokens), tuple(slots))


@dataclass(slots=True)
class Ticket:
    """What a call holds between acquire and finish."""

    token_rates: tuple[Rate, ...]
    estimate: int
    slots: tuple[Slot, ...]
    lease_id: str


def estimate_tokens(chars: int) -> int:
    """A token is about four characters of English text; every call costs at least one."""
    return max(1, chars // 4)


class RateLimiter:
    def __init__(
        self,
        config: RateLimitsConfig,
        backend: Backend,
        *,
        on_refusal: Callable[[str], None] = lambda _limit: None,
        on_backend_error: Callable[[], None] = lambda: None,
        on_state: Callable[[bool], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._backend = backend
        self._on_refusal = on_refusal
        self._on_backend_error = on_backend_error
        self._on_state = on_state
        self._sleep = sleep
        self._fail_open = config.backend == "memory" or config.redis.on_error == "open"
        self._probe_s = config.redis.retry_after_error_s
        self._down = False
        self._failures = 0  # in a row, across calls
        self._probe: asyncio.Task[None] | None = None
        self._plans: dict[tuple[str, str], _Plan] = {}
        self.active = _any_limit(config)

    def _plan(self, tenant: str, key_id: str) -> _Plan:
        plan = self._plans.get((tenant, key_id))
        if plan is None:
            c = self._config
            subjects = [
                (
                    f"tenant:{tenant}",
                    f"{tenant}:t",
                    c.tenants.get(tenant, LimitsConfig()).over(c.tenant),
                )
            ]
            if key_id:
                limits = c.keys.get(key_id, LimitsConfig()).over(c.key)
                subjects.append((f"key:{key_id}", f"{tenant}:k:{key_id}", limits))
            plan = self._plans[(tenant, key_id)] = _Plan.of(subjects)
        return plan

    async def acquire(
        self, tenant: str, key_id: str, tokens: int, *, stream: bool, lease_s: float
    ) -> Ticket | None:
        """Take the call's share of every limit that binds it, or refuse.

        Returns None when nothing was taken (no limit applies, or the backend is down and
        fails open). Raises:
            ResourceExhausted: over a limit; ``retry_after_s`` is the true wait (none when
                the call alone exceeds a limit), the violation names the limit.
            Unavailable: the backend is down and configured to fail closed.
        """
        plan = self._plan(tenant, key_id)
        token_rates = tuple(Rate(r.key, r.limit, tokens, r.name, r.subject) for r in plan.tokens)
        rates = plan.requests + token_rates
        slots = plan.slots if stream else ()
        if not rates and not slots:
            return None
        if self._down:
            return self._backend_down()
        lease_id = secrets.token_hex(8) if slots else ""
        try:
            decision = await self._backend.acquire(rates, slots, lease_id, lease_s)
        except BackendError as exc:
            await self._failed(exc)
            return self._backend_down()
        self._failures = 0
        if decision.refused is not None:
            limits: list[Rate | Slot] = [*rates, *slots]
            limit = limits[decision.refused]
            raise self._refusal(limit, decision.wait_s, tokens)
        return Ticket(token_rates, tokens, slots, lease_id)

    async def extend(self, ticket: Ticket, tokens: int) -> None:
        """Take ``tokens`` more of the ticket's token limits (what the call turned out to
        send beyond the request: a session's history), or refuse as ``acquire`` does; the
        ticket then reconciles the larger bound.

        Raises:
            ResourceExhausted: a tokens-per-minute limit has no room for them.
            Unavailable: the backend is down and configured to fail closed.
        """
        if tokens <= 0 or not ticket.token_rates:
            return
        rates = tuple(Rate(r.key, r.limit, tokens, r.name, r.subject) for r in ticket.token_rates)
        if self._down:
            self._backend_down()
            return
        try:
            decision = await self._backend.acquire(rates, (), "", 0.0)
        except BackendError as exc:
            await self._failed(exc)
            self._backend_down()
            return
        self._failures = 0
        if decision.refused is not None:
            raise self._refusal(rates[decision.refused], decision.wait_s, ticket.estimate + tokens)
        ticket.estimate += tokens

    async def finish(self, ticket: Ticket, used_tokens: int | None) -> None:
        """Reconcile the token estimate with ``used_tokens`` (None: the call reported no
        usage, so the estimate is refunded) and release the stream slots. Best effort: a
        backend failure is logged; leases expire on their own. Skipped while the backend
        is down (what it held is not waited on)."""
        if self._down:
            return
        delta = (used_tokens or 0) - ticket.estimate
        try:
            if delta and ticket.token_rates:
                await self._backend.adjust(
                    [Rate(r.key, r.limit, delta, r.name, r.subject) for r in ticket.token_rates]
                )
            if ticket.slots:
                await self._backend.release(ticket.slots, ticket.lease_id)
        except BackendError as exc:
            await self._failed(exc)

    async def aclose(self) -> None:
        """Stop the probe (if the backend is down) and close the backend."""
        await stop(self._probe)
        self._probe = None
        await self._backend.aclose()

    def _refusal(self, limit: Rate | Slot, wait_s: float, tokens: int) -> ResourceExhausted:
        self._on_refusal(limit.name)
        what = _DESCRIPTIONS[limit.name]
        violation = QuotaViolation(limit.subject, f"{limit.name}: {limit.limit} {what}")
        if wait_s == NEVER:
            return ResourceExhausted(
                f"this request (~{tokens} tokens) alone exceeds the limit of {limit.limit} "
                f"{what} for {limit.subject}",
                violations=[violation],
                reason=Reason.RATE_LIMITED,
            )
        return ResourceExhausted(
            f"rate limit exceeded: {limit.limit} {what} for {limit.subject}; "
            f"retry in {delay_seconds(wait_s)}s",
            retry_after_s=wait_s,
            violations=[violation],
            reason=Reason.RATE_LIMITED,
        )

    def _backend_down(self) -> Ticket | None:
        """Nothing taken when failing open. Raises Unavailable when failing closed."""
        if self._fail_open:
            return None
        raise Unavailable(
            "rate limiter unavailable",
            retry_after_s=self._probe_s or None,
            reason=Reason.RATE_LIMITER_UNAVAILABLE,
        )

    async def _failed(self, exc: BackendError) -> None:
        """Count a failed command. One failure (a timeout on a busy moment) costs only its
        own call the ``on_error`` answer; DOWN_AFTER_FAILURES in a row, with no success
        between them, mark the backend down (calls stop waiting on it, health
        NOT_SERVING, the probe starts)."""
        self._on_backend_error()
        self._failures += 1
        if self._down or self._failures < DOWN_AFTER_FAILURES:
            return
        self._down = True
        log.warning(
            "rate-limit backend failed; calls are %s until it answers",
            "let through" if self._fail_open else "refused",
            extra={"error": str(exc)},
        )
        if self._on_state is not None:
            await self._on_state(False)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_up())

    async def _probe_until_up(self) -> None:
        """Ping the backend every ``retry_after_error_s`` until it answers, then take calls
        to it again. Owned by the limiter: ``aclose`` cancels it."""
        while True:
            await self._sleep(self._probe_s)
            try:
                await self._backend.ping()
            except BackendError:
                continue
            self._down = False
            self._failures = 0
            log.warning("rate-limit backend answers again")
            if self._on_state is not None:
                await self._on_state(True)
            return


def _any_limit(config: RateLimitsConfig) -> bool:
    every = [config.tenant, config.key, *config.tenants.values(), *config.keys.values()]
    return any(
        lim.requests_per_min or lim.tokens_per_min or lim.concurrent_streams for lim in every
    )


def build_limiter(
    config: RateLimitsConfig,
    *,
    on_refusal: Callable[[str], None],
    on_backend_error: Callable[[], None],
    on_state: Callable[[bool], Awaitable[None]],
) -> RateLimiter:
    """The limiter on the configured backend (Redis clients connect lazily)."""
    backend: Backend
    if config.backend == "redis":
        from service.ratelimit.redis_backend import RedisBackend  # noqa: PLC0415

        r = config.redis
        backend = RedisBackend.from_url(r.url, r.key_prefix, r.timeout_s, r.pool_size)
    else:
        from service.ratelimit.memory import MemoryBackend  # noqa: PLC0415

        backend = MemoryBackend()
    return RateLimiter(
        config,
        backend,
        on_refusal=on_refusal,
        on_backend_error=on_backend_error,
        on_state=on_state,
    )
