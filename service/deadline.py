"""One absolute deadline per call, taken at the edge and passed down."""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.errors import DeadlineExceeded


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock by which a call must be answered."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self) -> float:
        """Seconds left; never negative."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def check(self, what: str = "the call") -> float:
        """The seconds left.

        Raises:
            DeadlineExceeded: no time is left for ``what``.
        """
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"deadline exceeded before {what}")
        return left
