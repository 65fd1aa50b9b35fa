"""Checking one whole text against a stage's guards: the verdicts, and the text redacted.

Used for the input (each message part), for tool-call arguments, and for a whole answer.
Each guard's time is reported to the observer; no verdict carries the matched text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from service.deadline import Deadline
from service.domain import GuardVerdict, ResponseFormat
from service.guards.base import Action, Finding, SpanMatcher, Stage
from service.guards.length import CATEGORY, LengthLimit
from service.guards.normalize import Normalized, normalize
from service.offload import Offload
from service.schemas import Schemas

# A text longer than this is checked off the event loop (when every guard runs in-process),
# in pieces of PIECE_CHARS: a regular expression or the terms automaton holds the GIL for
# the whole of one scan, so one scan of megabytes would stall the event loop's thread even
# from a worker thread; pieces give it a turn every few milliseconds.
OFFLOAD_CHARS = 64 * 1024
PIECE_CHARS = 16 * 1024


class GuardObserver(Protocol):
    """Told of every verdict and of each guard's time (metrics, span events)."""

    def verdict(self, verdict: GuardVerdict) -> None: ...

    def latency(self, guard: str, stage: str, seconds: float) -> None: ...


class NoObserver:
    def verdict(self, verdict: GuardVerdict) -> None:
        pass

    def latency(self, guard: str, stage: str, seconds: float) -> None:
        pass


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What a call's checks need besides the text: who asks, the answer's requested shape
    (for the JSON guard), the HTTP client (for external guards), and the observer."""

    agent: str
    observer: GuardObserver = field(default_factory=NoObserver)
    response_format: ResponseFormat | None = None
    http: Any = None  # an httpx2.AsyncClient, for external guards
    deadline: Deadline | None = None  # the call's: external guards give up by then
    offload: Offload | None = None  # where a long text is checked (off the event loop)
    schemas: Schemas = field(default_factory=Schemas)  # compiled JSON schemas (the config's)


@dataclass(frozen=True, slots=True)
class Hit:
    """A finding and the action its guard takes on it."""

    guard: str
    action: Action
    finding: Finding


class WholeJudge(Protocol):
    """A guard that needs the whole text (JSON validation, an external endpoint)."""

    async def judge(self, text: str, stage: Stage, ctx: GuardContext) -> list[Hit]: ...


@dataclass(frozen=True, slots=True)
class Guard:
    """One named guard from config, compiled once per config snapshot. Exactly one of
    ``matcher`` (bounded spans: checkable as a stream goes), ``length`` or ``judge`` (the
    whole text at once) is set."""

    name: str
    kind: str
    action: Action
    matcher: SpanMatcher | None = None
    length: LengthLimit | None = None
    judge: WholeJudge | None = None


@dataclass(frozen=True, slots=True)
class Checked:
    """A text after its checks: ``text`` redacted; ``blocked`` the first blocking verdict."""

    text: str
    verdicts: tuple[GuardVerdict, ...]
    blocked: GuardVerdict | None = None


def span_hits(guard: Guard, norm: Normalized, raw: str) -> list[Hit]:
    """A span or length guard's hits on ``raw`` (whose normal form is ``norm``)."""
    if guard.matcher is not None:
        found = guard.matcher.find(norm, raw)
    elif guard.length is not None:
        found = guard.length.find(norm.text, raw)
    else:
        found = []
    return [Hit(guard.name, guard.action, f) for f in found]


async def check(guards: Sequence[Guard], stage: Stage, raw: str, ctx: GuardContext) -> Checked:
    """``raw`` checked by every guard of ``stage``. A guard that errors follows its fail
    mode inside its judge (the external guard); the built-in ones do not fail."""
    if not guards or not raw:
        return Checked(raw, ())
    if (
        ctx.offload is not None
        and len(raw) > OFFLOAD_CHARS
        and all(guard.judge is None for guard in guards)
    ):
        # Normalising and matching is Python work that grows with the text: a long one is
        # checked off the event loop, so other calls and health probes keep their turns.
        return await ctx.offload.run(_check_locally, guards, stage, raw, ctx)
    norm = normalize(raw)
    hits: list[Hit] = []
    for guard in guards:
        began = time.perf_counter()
        if guard.judge is not None:
            hits.extend(await guard.judge.judge(raw, stage, ctx))
        else:
            hits.extend(span_hits(guard, norm, raw))
        ctx.observer.latency(guard.name, stage, time.perf_counter() - began)
    return settle(hits, stage, raw, norm, ctx.observer)


def _check_locally(guards: Sequence[Guard], stage: Stage, raw: str, ctx: GuardContext) -> Checked:
    """:func:`check` for guards that all run in-process (no external judge), a long text:
    scanned in pieces as a stream is (:class:`~service.guards.scan.SpanScan`: the same
    result as one scan of the whole), its length counted piece by piece."""
    from service.guards.scan import SpanScan  # noqa: PLC0415 (scan builds on this module)

    scan = SpanScan([g for g in guards if g.matcher is not None], stage, ctx.observer)
    out: list[str] = []
    chars = 0
    for at in range(0, len(raw), PIECE_CHARS):
        piece = raw[at : at + PIECE_CHARS]
        chars += len(normalize(piece).text)
        out.append(scan.take(piece))
        if scan.blocked:
            break
    out.append(scan.finish())
    utf8_bytes = len(raw.encode("utf-8", "surrogatepass"))
    for guard in guards:
        if guard.length is not None and guard.length.exceeded(chars, utf8_bytes):
            scan.hit(Hit(guard.name, guard.action, Finding(0, 0, CATEGORY, "", raw=True)))
    verdicts = verdicts_of(scan.hits, stage)
    for verdict in verdicts:
        ctx.observer.verdict(verdict)
    blocked = next((v for v in verdicts if v.action == Action.BLOCK), None)
    return Checked(raw, verdicts, blocked) if blocked else Checked("".join(out), verdicts)


def settle(
    hits: Sequence[Hit], stage: Stage, raw: str, norm: Normalized, observer: GuardObserver
) -> Checked:
    """The verdicts of ``hits`` (reported to ``observer``), and ``raw`` redacted."""
    verdicts = verdicts_of(hits, stage)
    for verdict in verdicts:
        observer.verdict(verdict)
    blocked = next((v for v in verdicts if v.action == Action.BLOCK), None)
    if blocked is not None:
        return Checked(raw, verdicts, blocked)
    return Checked(redact(raw, norm, hits), verdicts)


def verdicts_of(hits: Iterable[Hit], stage: Stage) -> tuple[GuardVerdict, ...]:
    """One verdict per guard, category and action, counting its findings."""
    counts: dict[tuple[str, str, str], int] = {}
    for hit in hits:
        key = (hit.guard, hit.finding.category, hit.action.value)
        counts[key] = counts.get(key, 0) + 1
    return tuple(
        GuardVerdict(guard, stage.value, category, action, count)
        for (guard, category, action), count in counts.items()
    )


def merge_verdicts(*groups: Iterable[GuardVerdict]) -> tuple[GuardVerdict, ...]:
    """Verdicts with the same guard, stage, category and action summed."""
    counts: dict[tuple[str, str, str, str], int] = {}
    for group in groups:
        for v in group:
            key = (v.guard, v.stage, v.category, v.action)
            counts[key] = counts.get(key, 0) + v.count
    return tuple(GuardVerdict(*key, count) for key, count in counts.items())


def raw_spans(hits: Iterable[Hit], norm: Normalized) -> list[tuple[int, int, str]]:
    """The redacting hits as raw-text spans, merged where they overlap, in order."""
    spans = sorted(
        (
            (h.finding.start, h.finding.end, h.finding.placeholder)
            if h.finding.raw
            else (
                norm.raw_index(h.finding.start),
                norm.raw_index(h.finding.end),
                h.finding.placeholder,
            )
        )
        for h in hits
        if h.action == Action.REDACT
    )
    merged: list[tuple[int, int, str]] = []
    for start, end, mark in spans:
        if merged and start < merged[-1][1]:
            first = merged[-1]
            merged[-1] = (first[0], max(first[1], end), first[2])
        else:
            merged.append((start, end, mark))
    return merged


def redact(raw: str, norm: Normalized, hits: Iterable[Hit]) -> str:
    """``raw`` with every redacting hit's span replaced by its placeholder."""
    spans = raw_spans(hits, norm)
    if not spans:
        return raw
    out: list[str] = []
    at = 0
    for start, end, mark in spans:
        out.extend((raw[at:start], mark))
        at = end
    out.append(raw[at:])
    return "".join(out)
