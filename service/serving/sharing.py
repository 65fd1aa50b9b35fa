"""What ``serve --workers N`` may not run: state that each worker would keep for itself.

Each worker is a process of its own. What lives in its memory is counted N times: a budget
held in memory (embedded state) would let N workers spend N times the limit, and a rate limit
counted in memory would let N times the rate through. Those combinations are refused at start
with the fix named. What the workers share correctly runs: the embedded SQLite file (WAL,
one transaction per write, a busy timeout) holds sessions, the ledger, the audit log and the
idempotency records for all of them; the response cache stays per worker (an optimisation:
a miss costs an upstream call, never money twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.config import ConfigError

if TYPE_CHECKING:
    from service.config import Snapshot
    from service.config.chain_model import RateLimitsConfig


def refuse_unshared(snapshot: Snapshot, workers: int) -> None:
    """Raises ConfigError when ``workers`` processes would each keep state that must be one.

    Raises:
        ConfigError: budgets on embedded state, or rate limits on the memory backend, with
            more than one worker; the message names the setting and the fix.
    """
    if workers <= 1:
        return
    problems = []
    if snapshot.state.backend == "embedded" and snapshot.budgets:
        names = ", ".join(b.name for b in snapshot.budgets)
        problems.append(
            f"budgets ({names}) on state.backend: embedded would be counted in each worker's "
            f"memory, allowing {workers} times each limit: set state.backend: shared "
            "(PostgreSQL + Redis)"
        )
    if snapshot.rate_limits.backend == "memory" and _any_limit(snapshot.rate_limits):
        problems.append(
            "rate limits on rate_limits.backend: memory would be counted by each worker, "
            f"letting {workers} times each limit through: set rate_limits.backend: redis"
        )
    if problems:
        raise ConfigError(f"--workers {workers}: " + "; ".join(problems) + ", or run one worker")


def _any_limit(config: RateLimitsConfig) -> bool:
    every = [config.tenant, config.key, *config.tenants.values(), *config.keys.values()]
    return any(
        lim.requests_per_min or lim.tokens_per_min or lim.concurrent_streams for lim in every
    )
