"""The regex guard: an operator's patterns, compiled with RE2 (``google-re2``).

RE2 runs in time linear in the text whatever the pattern, so a pattern such as ``(a+)+$``
that backtracks for ever under Python's ``re`` cannot hang the server. RE2 has no
backreferences or lookaround: such a pattern is refused when the config is loaded, with
RE2's reason.
"""

from __future__ import annotations

from collections.abc import Mapping

import re2

from service.guards.base import Finding, placeholder
from service.guards.normalize import Normalized


class RegexMatcher:
    """``patterns``: category → pattern. ``window``: the longest match a stream must be able
    to see whole (a stream holds back this many characters)."""

    def __init__(self, patterns: Mapping[str, str], *, case_sensitive: bool, window: int) -> None:
        """Raises:
        ValueError: a pattern RE2 cannot compile (the message names its category)."""
        options = re2.Options()
        options.log_errors = False
        options.case_sensitive = case_sensitive
        self._patterns = []
        for category, pattern in patterns.items():
            try:
                compiled = re2.compile(pattern, options)
            except re2.error as exc:
                reason = exc.args[0] if exc.args else exc
                if isinstance(reason, bytes):
                    reason = reason.decode("utf-8", "replace")
                raise ValueError(f"pattern {category!r} is not valid RE2: {reason}") from None
            self._patterns.append((category, compiled))
        self.window = window

    def find(self, text: Normalized, raw: str) -> list[Finding]:
        found: list[Finding] = []
        for category, pattern in self._patterns:
            for match in pattern.finditer(text.text):
                start, end = match.span()
                if end > start and not any(f.start < end and start < f.end for f in found):
                    found.append(Finding(start, end, category, placeholder(category)))
        return found

    def hold(self, text: str) -> int:
        return min(len(text), self.window)
