"""Bounds a store call in time and turns driver failures into ``Unavailable``.

Messages name the store and the kind of failure, never a DSN, URL or key.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.errors import SwitchboardError, Unavailable

STORE_RETRY_AFTER_S = 1.0


@asynccontextmanager
async def guarded(
    store: str, timeout_s: float, failures: tuple[type[BaseException], ...]
) -> AsyncIterator[None]:
    """Run the block within ``timeout_s``.

    Raises:
        Unavailable: the block timed out or raised one of ``failures`` (or OSError).
    """
    caught: tuple[type[BaseException], ...] = (OSError, *failures)
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except SwitchboardError:
        raise
    except TimeoutError as exc:
        raise unavailable(store, exc, timeout_s) from exc
    except caught as exc:
        raise unavailable(store, exc) from exc


def unavailable(store: str, exc: BaseException, timeout_s: float = 0.0) -> Unavailable:
    """The ``Unavailable`` that :func:`guarded` raises for ``exc`` (a ``TimeoutError`` after
    ``timeout_s``, or a driver failure), with ``exc`` as its cause."""
    if isinstance(exc, TimeoutError):
        message = f"state store {store} did not answer within {timeout_s:g}s"
    else:
        message = f"state store {store} is unavailable ({type(exc).__name__})"
    error = Unavailable(message, retry_after_s=STORE_RETRY_AFTER_S)
    error.__cause__ = exc
    return error
