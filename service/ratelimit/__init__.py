"""Rate limits per tenant and per key, on an in-process or a Redis backend."""

from service.ratelimit.base import Backend, BackendError
from service.ratelimit.limiter import RateLimiter, Ticket, estimate_tokens
from service.ratelimit.memory import MemoryBackend

__all__ = [
    "Backend",
    "BackendError",
    "MemoryBackend",
    "RateLimiter",
    "Ticket",
    "estimate_tokens",
]
