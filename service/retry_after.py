"""How a wait before retrying is rounded, for every door: up, never early.

One rule, so a caller sees the same wait whichever door it came through: the gRPC door's
``google.rpc.RetryInfo`` carries it in whole milliseconds (a Duration), the HTTP doors'
``Retry-After`` in whole seconds (RFC 9110, section 10.2.3: delay-seconds is a non-negative
integer) and ``retry-after-ms`` in milliseconds. A positive wait is never sent as 0: a
0.2 s wait is ``Retry-After: 1``.
"""

from __future__ import annotations

import math


def delay_ms(seconds: float) -> int:
    """``seconds`` in whole milliseconds, rounded up; a negative wait is 0. Float noise
    below a microsecond is not a millisecond more (1.1 s is 1100 ms, not 1101)."""
    return max(0, math.ceil(round(seconds * 1000, 3)))


def delay_seconds(seconds: float) -> int:
    """``seconds`` in whole seconds, rounded up from :func:`delay_ms` (the ``Retry-After``
    header's delay-seconds)."""
    return -(-delay_ms(seconds) // 1000)
