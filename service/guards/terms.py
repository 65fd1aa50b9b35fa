"""The denied-terms guard: a list of words or phrases, matched case-insensitively with an
Aho-Corasick automaton (``pyahocorasick``): one pass over the text whatever the number of
terms. The verdict's category is ``denied_term``; the term itself is never recorded."""

from __future__ import annotations

from collections.abc import Iterable

import ahocorasick

from service.guards.base import Finding
from service.guards.normalize import Normalized, normalize

CATEGORY = "denied_term"


class TermsMatcher:
    """``whole_words``: a term matches only between non-word characters ("ass" is not found
    in "class")."""

    def __init__(self, terms: Iterable[str], *, whole_words: bool = True) -> None:
        self._automaton = ahocorasick.Automaton()
        self._prefixes: set[str] = set()
        longest = 0
        for term in terms:
            folded = _fold(normalize(term).text.strip())
            if not folded:
                continue
            self._automaton.add_word(folded, len(folded))
            self._prefixes.update(folded[:i] for i in range(1, len(folded) + 1))
            longest = max(longest, len(folded))
        self._empty = longest == 0
        if not self._empty:
            self._automaton.make_automaton()
        self._whole_words = whole_words
        self.window = longest

    def find(self, text: Normalized, raw: str) -> list[Finding]:
        if self._empty:
            return []
        s = _fold(text.text)
        found: list[Finding] = []
        for last, length in self._automaton.iter(s):
            start, end = last + 1 - length, last + 1
            if self._whole_words and (_word(s, start - 1) or _word(s, end)):
                continue
            if found and found[-1].end > start:  # overlapping terms: one span
                previous = found.pop()
                start = min(start, previous.start)
                end = max(end, previous.end)
            found.append(Finding(start, end, CATEGORY, "[DENIED]"))
        return found

    def hold(self, text: str) -> int:
        s = _fold(text[-self.window :]) if self.window else ""
        for k in range(min(len(s), self.window), 0, -1):
            if s[-k:] in self._prefixes:
                return k
        return 0


def _word(text: str, index: int) -> bool:
    return 0 <= index < len(text) and (text[index].isalnum() or text[index] == "_")


def _fold(text: str) -> str:
    """Lower case, one character for one (so indexes stay those of ``text``)."""
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
