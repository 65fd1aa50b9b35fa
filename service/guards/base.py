"""What every guard shares: stages, actions, findings and the verdicts they become."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from service.guards.normalize import Normalized


class Stage(enum.StrEnum):
    INPUT = "input"  # the caller's messages, before anything is stored or sent
    OUTPUT = "output"  # the answer's text and tool-call arguments, as they stream
    TOOL_CALL = "tool_call"  # each tool call the model makes, checked whole
    TOOL_RESULT = "tool_result"  # a tool's result, by the input guards (verdicts only)


class Action(enum.StrEnum):
    BLOCK = "block"  # refuse the input / end the answer (CONTENT_FILTER)
    REDACT = "redact"  # replace the span with a typed placeholder such as [EMAIL]
    LOG = "log"  # record the verdict, change nothing


@dataclass(frozen=True, slots=True)
class Finding:
    """One span a guard objects to, in normalised-text indexes (raw-text indexes when
    ``raw``). ``placeholder`` replaces it on redaction. Never holds the matched text."""

    start: int
    end: int
    category: str
    placeholder: str
    raw: bool = False


class SpanMatcher(Protocol):
    """A matcher of bounded spans: what a streamed answer can be checked with as it goes."""

    window: int
    """The most characters (normalised) :meth:`hold` ever asks to hold back."""

    def find(self, text: Normalized, raw: str) -> list[Finding]:
        """Every span of ``text`` (the normalised form of ``raw``) this matcher objects to."""
        ...

    def hold(self, text: str) -> int:
        """How many characters at the end of ``text`` (normalised) could begin a match that
        more text would complete (0 to ``window``): a stream holds them back."""
        ...


def tail_run(text: str, chars: str, window: int, starts: str = "") -> int:
    """The length of the run of ``chars`` that ends ``text`` (at most ``window``), from its
    first character that is not in ``starts`` (characters a match cannot begin with)."""
    tail = text[-window:]
    run = tail[len(tail.rstrip(chars)) :]
    return len(run.lstrip(starts)) if starts else len(run)


def placeholder(category: str) -> str:
    return f"[{category.upper()}]"
