"""Prompt-injection heuristics, for the input and for tool results.

Phrases that try to replace the instructions ("ignore all previous instructions", "you are
now DAN", "reveal your system prompt"), forged role markers (``system:`` at the start of a
line, ``<|im_start|>``, ``[INST]``), and hidden text: zero-width, bidi-control and Unicode
tag characters (an instruction invisible to a human reviewer). These are heuristics, not a
classifier: they catch the common phrasings cheaply; plug a model in with the external guard
for more.
"""

from __future__ import annotations

import re

from service.guards.base import Finding
from service.guards.normalize import INVISIBLE, Normalized

_GAP = r"[^.!?\n]{0,40}?"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "instruction_override",
        re.compile(
            rf"\b(?:ignore|disregard|forget|override|bypass)\b{_GAP}"
            rf"\b(?:previous|prior|above|earlier|preceding|all|any|your|the|system|developer)\b"
            rf"{_GAP}\b(?:instructions?|prompts?|rules|directions|guidelines|guardrails)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "prompt_exfiltration",
        re.compile(
            rf"\b(?:reveal|show|print|repeat|output|display|leak)\b{_GAP}"
            r"\b(?:system prompt|initial instructions|hidden instructions|your instructions)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "role_override",
        re.compile(
            r"\byou are no longer\b|\bfrom now on,? you (?:are|will)\b|\byou are now (?:in )?"
            r"(?:DAN|an? (?:unrestricted|unfiltered|uncensored|jailbroken))\b"
            r"|\b(?:DAN|developer|god) mode\b|\bjailbr(?:eak|oken)\b"
            r"|\bpretend (?:that )?you (?:have no|are not bound|are free)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "forged_role",
        re.compile(
            r"(?m:^[ \t]*(?:system|assistant)[ \t]*:)|<\|im_(?:start|end)\|>|\[/?INST\]|<</?SYS>>",
            re.IGNORECASE,
        ),
    ),
)
HIDDEN_TEXT = "hidden_text"
CATEGORIES = (*(name for name, _ in _PATTERNS), HIDDEN_TEXT)
_WINDOW = 160


class InjectionMatcher:
    """``hidden_text``: also object to invisible characters (found in the raw text; a
    redaction removes them)."""

    window = _WINDOW

    def __init__(self, *, hidden_text: bool = True) -> None:
        self._hidden_text = hidden_text

    def find(self, text: Normalized, raw: str) -> list[Finding]:
        found: list[Finding] = []
        for category, pattern in _PATTERNS:
            found.extend(
                Finding(m.start(), m.end(), category, "[INJECTION]")
                for m in pattern.finditer(text.text)
            )
        if self._hidden_text and not raw.isascii():
            found.extend(
                Finding(m.start(), m.end(), HIDDEN_TEXT, "", raw=True)
                for m in INVISIBLE.finditer(raw)
            )
        return found

    def hold(self, text: str) -> int:
        # A phrase never spans a sentence end: hold the sentence in progress.
        tail = text[-_WINDOW:]
        cut = max(tail.rfind(c) for c in ".!?\n")
        return len(tail) - cut - 1
