"""Idempotent unary calls: at most once per tenant, key and request id within a TTL."""

from service.idempotency.once import Idempotency, idempotency_key

__all__ = ["Idempotency", "idempotency_key"]
