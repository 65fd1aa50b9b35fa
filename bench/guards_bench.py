"""What the guards cost: each built-in guard per KB of text, the default PII + secrets pair
on a 2 KB prompt, and the streaming output guard's added time to first token and per-delta
cost. CPU only (no network); p50 and p99 of many runs.

    PYTHONPATH=.:generated .venv/bin/python bench/guards_bench.py

The texts are prose with a few findings mixed in (an address, a phone number, a card, a
key), as a prompt or an answer would be; ``--unicode`` makes them non-ASCII (the slower
normalisation path).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from pydantic import TypeAdapter

from service.config.guards_model import GuardConfig
from service.domain import Event, Finish, FinishReason, TextDelta, Usage, UsageEvent
from service.guards import AgentGuards, Guard, GuardContext, OutputGuard, Stage, check
from service.guards.compile import compile_guards

PROSE = (
    "The quarterly report shows steady growth across every region, with the largest gains "
    "in the north. Customers asked for faster delivery and clearer invoices, and the team "
    "answered both within the month. "
)
FINDINGS = (
    "Contact bob.smith@example.com or call +1 415 555 2671. ",
    "Card 4111 1111 1111 1111 was charged. ",
    "The key sk-proj-abcdefghijklmnopqrstuvwxyz0123 leaked. ",
)
GUARDS: dict[str, dict[str, Any]] = {
    "pii": {"kind": "pii", "action": "redact"},
    "secrets": {"kind": "secrets", "action": "redact"},
    "denied_terms": {"kind": "denied_terms", "terms": [f"term{i}" for i in range(500)]},
    "regex": {"kind": "regex", "patterns": {"ticket": r"TCK-\d{6}", "evil": "(a+)+$"}},
    "length": {"kind": "length", "max_chars": 100_000},
    "prompt_injection": {"kind": "prompt_injection"},
}


def text_of(size: int, *, unicode: bool, seed: int = 0) -> str:
    """Prose with findings; each ``seed`` gives other numbers (so no cache answers twice)."""
    parts: list[str] = []
    i = 0
    while sum(map(len, parts)) < size:
        parts.append(PROSE)
        parts.append(FINDINGS[i % len(FINDINGS)])
        i += 1
    text = "".join(parts)[:size]
    text = text.replace("555 2671", f"{200 + seed % 700} {1000 + seed % 9000}")
    return text.replace("growth", "grówth") if unicode else text


def compiled() -> dict[str, Guard]:
    adapter: TypeAdapter[GuardConfig] = TypeAdapter(GuardConfig)
    return compile_guards({n: adapter.validate_python(c) for n, c in GUARDS.items()})


def timed(
    run: Callable[[int], Any], n: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """p50 and p99 in microseconds of ``n`` runs of ``run`` (given the run's number), by
    ``clock`` (wall time; ``time.thread_time`` counts only this thread's CPU, so a run
    the OS set aside while other processes ran is not counted: on a shared machine it is
    the steadier figure)."""
    samples = []
    for i in range(n):
        began = clock()
        run(i)
        samples.append((clock() - began) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def whole(
    guards: Sequence[Guard],
    size: int,
    n: int,
    *,
    unicode: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    texts = [text_of(size, unicode=unicode, seed=i) for i in range(n)]
    loop = asyncio.new_event_loop()
    ctx = GuardContext("bench")
    try:
        return timed(
            lambda i: loop.run_until_complete(check(guards, Stage.INPUT, texts[i], ctx)),
            n,
            clock,
        )
    finally:
        loop.close()


async def _upstream(deltas: Sequence[str], stamps: list[float]) -> AsyncGenerator[Event, None]:
    for delta in deltas:
        stamps.append(time.perf_counter())
        yield TextDelta(delta)
    yield UsageEvent(Usage(10, len(deltas)))
    yield Finish(FinishReason.STOP)


async def _stream_once(guards: Sequence[Guard], deltas: Sequence[str]) -> tuple[float, float]:
    """(first delta in → first delta out, total time / deltas), in microseconds."""
    stamps: list[float] = []
    source = _upstream(deltas, stamps)
    if guards:
        source = OutputGuard(AgentGuards(output=tuple(guards)), GuardContext("b"), {}, 1).events(
            source
        )
    first_out = 0.0
    began = time.perf_counter()
    async for event in source:
        if isinstance(event, TextDelta) and not first_out:
            first_out = time.perf_counter()
    total = time.perf_counter() - began
    return (first_out - stamps[0]) * 1e6, total * 1e6 / len(deltas)


def stream(guards: Sequence[Guard], size: int, n: int, *, unicode: bool) -> tuple[float, float]:
    answers = [text_of(size, unicode=unicode, seed=i) for i in range(n)]
    loop = asyncio.new_event_loop()
    try:
        runs = [
            # a token a word, as models stream
            loop.run_until_complete(_stream_once(guards, [w + " " for w in a.split(" ")]))
            for a in answers
        ]
    finally:
        loop.close()
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--unicode", action="store_true")
    args = parser.parse_args()
    guards = compiled()
    print(f"per guard, one 1 KB text ({'non-ASCII' if args.unicode else 'ASCII'}), µs:")
    print(f"  {'guard':<18} {'p50':>8} {'p99':>8}")
    for name, guard in guards.items():
        p50, p99 = whole([guard], 1024, args.runs, unicode=args.unicode)
        print(f"  {name:<18} {p50:8.1f} {p99:8.1f}")
    p50, p99 = whole([guards["pii"], guards["secrets"]], 2048, args.runs, unicode=args.unicode)
    print(f"default pii + secrets on a 2 KB prompt: p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    pair = [guards["pii"], guards["secrets"]]
    p50, p99 = whole(pair, 2048, args.runs, unicode=args.unicode, clock=time.thread_time)
    print(f"  the same, CPU time of the checking thread: p50 {p50:.1f} µs, p99 {p99:.1f} µs")
    runs = max(20, args.runs // 20)
    base_ttft, base_delta = stream([], 2048, runs, unicode=args.unicode)
    ttft, per_delta = stream([guards["pii"], guards["secrets"]], 2048, runs, unicode=args.unicode)
    print(
        "stream guard (pii + secrets), 2 KB answer a word a delta: "
        f"first delta out after {ttft:.1f} µs (bare {base_ttft:.1f}), "
        f"{per_delta:.1f} µs a delta (bare {base_delta:.1f})"
    )


if __name__ == "__main__":
    main()
