"""Text as guards match it: Unicode NFKC, with invisible characters removed.

``a\u200bb@example.com`` (a zero-width space inside an address), full-width digits
(U+FF10 to U+FF19) and Unicode tag characters (U+E0000-U+E007F, invisible "ASCII smuggling")
would let a pattern slip past a matcher that reads the raw text. Guards match the normalised
text and map what they find back to the raw text, so a redaction replaces exactly the raw
span and everything around it is left as the caller or the model wrote it.

NFKC is applied one character at a time (so each normalised character knows the raw one it
came from), and only to the non-ASCII characters (ASCII is its own NFKC form): a long text with
a few accents costs little more than an ASCII one. Composition across characters (a letter and
a combining accent) is not redone, which matters to no pattern a guard uses: they match
ASCII-range text.
"""

from __future__ import annotations

import re
import unicodedata
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

# Zero-width and invisible formatting characters (Unicode category Cf that render as
# nothing): ZWSP, ZWNJ, ZWJ, word joiner, invisible operators, BOM, soft hyphen, the
# Mongolian vowel separator, and the tag block.
INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\U000e0000-\U000e007f]"
)


_NON_ASCII = re.compile(r"[^\x00-\x7f]+")


def has_hidden_text(text: str) -> bool:
    """True when ``text`` holds zero-width, bidi-control or tag characters."""
    return not text.isascii() and INVISIBLE.search(text) is not None


@dataclass(frozen=True, slots=True)
class Normalized:
    """``text`` normalised; ``origin[i]`` is the raw index of normalised index ``i``
    (``origin[len(text)]`` is the raw length). ``origin`` is None when nothing changed."""

    text: str
    raw_length: int
    origin: Sequence[int] | None = None  # an array of C longs: a long text's map is compact

    def raw_index(self, index: int) -> int:
        """The raw index where normalised index ``index`` (0..len) begins."""
        if self.origin is None:
            return index
        return self.origin[index]


def normalize(text: str) -> Normalized:
    """``text`` in NFKC with invisible characters removed, and the map back to ``text``."""
    if text.isascii():
        return Normalized(text, len(text))
    out: list[str] = []
    origin = array("q")
    at = 0
    for run in _NON_ASCII.finditer(text):
        start, end = run.span()
        out.append(text[at:start])
        origin.extend(range(at, start))
        for i in range(start, end):
            char = text[i]
            if INVISIBLE.match(char):
                continue
            folded = unicodedata.normalize("NFKC", char)
            out.append(folded)
            origin.extend([i] * len(folded))
        at = end
    out.append(text[at:])
    origin.extend(range(at, len(text) + 1))
    return Normalized("".join(out), len(text), origin)
