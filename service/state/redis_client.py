"""How every Redis client of the service is built: bounded, and quick to heal.

Each Redis that makes decisions (rate limits, budgets, response-cache leases, idempotency
records, shared breaker state) is reached through a client built here, so all of them
recover the same way when Redis restarts or fails over:

- A pooled connection opened before a restart fails once when next used ("Connection
  closed by server"). redis-py (``redis.retry.Retry``) then drops it and sends the command
  again on a fresh connection, at once: a restart costs no caller a failure. Only
  ``ConnectionError`` is retried, never a timeout: a command that timed out may have run,
  and the scripts are not all idempotent.
- A connection idle for ``HEALTH_CHECK_INTERVAL_S`` is checked with a ``PING`` (retried the
  same way) before it carries a command, so a stale one is replaced before it matters.
- The pool is bounded (``max_connections``): a burst waits for a free connection, up to the
  command's timeout, instead of opening a connection per call (on a busy machine the connect
  storm itself makes commands time out).

redis-py's ``from_url`` clients retry nothing by default (their connections get
``Retry(NoBackoff(), 0)``), which is why this is spelled out here.
"""

from __future__ import annotations

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

RETRIES = 2
"""Fresh connections tried after a command's connection fails (a restart needs one)."""
BACKOFF_BASE_S = 0.005
BACKOFF_CAP_S = 0.05
HEALTH_CHECK_INTERVAL_S = 1.0
"""A connection idle longer than this is pinged before it carries a command."""


def async_client(
    url: str, *, timeout_s: float, max_connections: int, pool_timeout_s: float | None = None
) -> aioredis.Redis:
    """An asyncio client whose pool holds at most ``max_connections``.

    ``timeout_s`` bounds each connect and each reply (seconds); ``pool_timeout_s`` (default
    ``timeout_s``) bounds the wait for a free connection, after which redis-py raises
    ``ConnectionError("No connection available.")``.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s if pool_timeout_s is None else pool_timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=AsyncRetry(
            ExponentialWithJitterBackoff(base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S),
            RETRIES,
            supported_errors=(RedisConnectionError,),
        ),
        retry_on_error=[],
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
    return aioredis.Redis.from_pool(pool)


def sync_client(url: str, *, timeout_s: float, max_connections: int = 4) -> redis.Redis:
    """A blocking client (for libraries that only speak synchronous redis-py), built like
    :func:`async_client`."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(
            ExponentialWithJitterBackoff(base=BACKOFF_BASE_S, cap=BACKOFF_CAP_S),
            RETRIES,
            supported_errors=(RedisConnectionError,),
        ),
        retry_on_error=[],
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
    return redis.Redis.from_pool(pool)
