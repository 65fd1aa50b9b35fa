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
        raise Unavailable(
            f"state store {store} did not answer within {timeout_s:g}s",
            retry_after_s=STORE_RETRY_AFTER_S,
        ) from exc
    except caught as exc:
        raise Unavailable(
            f"state store {store} is unavailable ({type(exc).__name__})",
            retry_after_s=STORE_RETRY_AFTER_S,
        ) from exc
