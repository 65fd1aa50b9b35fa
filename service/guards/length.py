"""The length guard: at most ``max_chars`` characters (normalised) and ``max_tokens``
estimated tokens (:func:`service.usage.estimate.text_tokens`: UTF-8 bytes / 3, which errs
high) in one text."""

from __future__ import annotations

from dataclasses import dataclass

from service.guards.base import Finding
from service.usage.estimate import BYTES_PER_TOKEN

CATEGORY = "too_long"


@dataclass(frozen=True, slots=True)
class LengthLimit:
    max_chars: int | None = None
    max_tokens: int | None = None

    def exceeded(self, chars: int, utf8_bytes: int) -> bool:
        """True when a text of ``chars`` characters and ``utf8_bytes`` bytes is too long."""
        if self.max_chars is not None and chars > self.max_chars:
            return True
        tokens = -(-utf8_bytes // BYTES_PER_TOKEN)
        return self.max_tokens is not None and tokens > self.max_tokens

    def find(self, text: str, raw: str) -> list[Finding]:
        if self.exceeded(len(text), len(raw.encode("utf-8", "surrogatepass"))):
            return [Finding(0, len(text), CATEGORY, "")]
        return []
