"""Span guards over a text that arrives in pieces: a streamed answer's deltas, or a long
input cut into pieces so that no one scan is long.

After each piece the unreleased text (plus a little released context, for word boundaries)
is scanned; each span guard says how much of the tail could begin a match that more text
would complete (``hold``), and a match that touches the end may still grow, so it is held
too (up to ``GROWING_CHARS``). Everything before the earliest held character is final: its
matches are recorded and redacted, and it is released. At the end (``finish``) the rest is
final. The result is the whole-text result, whatever the cuts (tests/guards/test_stream.py
checks every 3-way split).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from service.guards.base import Action, Finding, Stage
from service.guards.check import Guard, GuardObserver, Hit, span_hits
from service.guards.normalize import normalize

GROWING_CHARS = 20_000
"""The longest match held while it may still grow. Every held character is scanned again with
the next piece, so an unbounded hold would make a stream's cost quadratic. The built-in
guards' matches are shorter (the longest, a PEM private key, stops at 16 KB); an operator's
pattern that grows past this is cut here: the part seen is final (redacted or blocked) and
the text after it is scanned afresh."""
CONTEXT_CHARS = 32  # released text kept for the next scan (word boundaries, lookbehinds)


class SpanScan:
    """``guards``: the span guards (each with a ``matcher``). ``hits`` collects what they
    found in the released text; ``blocked`` turns true at the first blocking hit (nothing
    more is released after it)."""

    __slots__ = ("_context", "_guards", "_held", "_hits", "_observer", "_stage", "blocked")

    def __init__(self, guards: Sequence[Guard], stage: Stage, observer: GuardObserver) -> None:
        self._guards = guards
        self._stage = stage
        self._observer = observer
        self._context = ""  # the raw text released last (unredacted), for the next scan
        self._held = ""  # raw text not yet released
        self._hits: list[Hit] | None = None  # made at the first hit: most answers have none
        self.blocked = False

    @property
    def hits(self) -> Sequence[Hit]:
        return self._hits if self._hits is not None else ()

    def hit(self, hit: Hit) -> None:
        """Record ``hit`` (a span guard's, or another guard's on the same text)."""
        if self._hits is None:
            self._hits = []
        self._hits.append(hit)
        if hit.action == Action.BLOCK:
            self.blocked = True

    def take(self, text: str) -> str:
        """Take in the next piece; return the text now final (redacted), "" once blocked."""
        self._held += text
        return self._advance(final=False)

    def finish(self) -> str:
        """The rest, final (redacted), "" once blocked."""
        return self._advance(final=True)

    def held(self) -> str:
        """Take the text not yet released (for a whole-text check instead)."""
        held, self._held = self._held, ""
        return held

    def _advance(self, *, final: bool) -> str:
        if self.blocked:
            return ""
        if not self._guards:
            out, self._held = self._held, ""
            return out
        scan = self._context + self._held
        start_at = len(self._context)
        norm = normalize(scan)
        hits: list[Hit] = []
        for guard in self._guards:
            began = time.perf_counter()
            hits.extend(span_hits(guard, norm, scan))
            self._observer.latency(guard.name, self._stage, time.perf_counter() - began)
        spans = [(_raw(h.finding, norm.raw_index), h) for h in hits]
        spans = [(s, h) for s, h in spans if s[1] > start_at]  # already released: done
        release = len(scan)
        if not final:
            held = max(g.matcher.hold(norm.text) for g in self._guards if g.matcher is not None)
            release = norm.raw_index(len(norm.text) - held)
            for (s, e), _ in spans:
                # Touches the end: may still grow; held up to GROWING_CHARS, then cut there.
                if e >= len(scan) and e - s <= GROWING_CHARS:
                    release = min(release, s)
            moved = True
            while moved:  # never cut through a match (one grown past the limit is final)
                moved = False
                for (s, e), _ in spans:
                    if s < release < e:
                        release, moved = (e if e - s > GROWING_CHARS else s), True
        release = max(release, start_at)
        final_hits = [(s, h) for s, h in spans if s[1] <= release]
        for _, hit in final_hits:
            self.hit(hit)
        if any(hit.action == Action.BLOCK for _, hit in final_hits):
            return ""
        out = _redacted(scan, start_at, release, final_hits)
        self._context = scan[max(start_at, release - CONTEXT_CHARS) : release]
        if len(self._context) < CONTEXT_CHARS:
            self._context = scan[max(0, release - CONTEXT_CHARS) : release]
        self._held = scan[release:]
        return out


def _raw(finding: Finding, raw_index: Callable[[int], int]) -> tuple[int, int]:
    if finding.raw:
        return finding.start, finding.end
    return raw_index(finding.start), raw_index(finding.end)


def _redacted(scan: str, start: int, end: int, hits: Sequence[tuple[tuple[int, int], Hit]]) -> str:
    """``scan[start:end]`` with the redacting hits replaced by their placeholders."""
    spans = sorted(
        (max(s, start), e, h.finding.placeholder) for (s, e), h in hits if h.action == Action.REDACT
    )
    out: list[str] = []
    at = start
    for s, e, mark in spans:
        if e <= at:
            continue
        out.append(scan[at : max(at, s)])
        if s >= at:
            out.append(mark)
        at = e
    out.append(scan[at:end])
    return "".join(out)
