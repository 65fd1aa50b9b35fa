"""Deltas that arrived together, merged: one event for each run of text, and for each run of
one tool call's argument pieces.

A provider reads its upstream's body one network read at a time; every delta in one read is
already here, so merging them holds nothing back. When the caller is slower than the
upstream, more of the stream waits in the socket between reads, and each read carries it to
the caller as one ``StreamResponse`` instead of one per upstream chunk. When the caller keeps
up, reads are small and deltas pass one by one, as the upstream sent them. The first delta of
an attempt never waits: it goes out alone, before the rest of its read is even parsed
(:class:`Gatherer`), so a whole answer in one read costs its first event one chunk's parse,
not the answer's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from service.domain import ProviderEvent, TextDelta, ToolCallDelta
from service.providers.sse import ServerEvent


def coalesced(events: list[ProviderEvent]) -> list[ProviderEvent]:
    """``events`` with each run of adjacent ``TextDelta`` joined into one, and each run of
    adjacent ``ToolCallDelta`` of one tool call joined into one (a later piece that names an
    id or a name starts a new call's event). Order and content are kept exactly."""
    if len(events) < 2:
        return events
    out: list[ProviderEvent] = []
    texts: list[str] = []
    for event in events:
        if isinstance(event, TextDelta):
            texts.append(event.text)
            continue
        if texts:
            out.append(TextDelta("".join(texts)) if len(texts) > 1 else TextDelta(texts[0]))
            texts = []
        last = out[-1] if out else None
        if (
            isinstance(event, ToolCallDelta)
            and isinstance(last, ToolCallDelta)
            and last.index == event.index
            and not event.id
            and not event.name
        ):
            out[-1] = ToolCallDelta(
                last.index, last.id, last.name, last.arguments_delta + event.arguments_delta
            )
            continue
        out.append(event)
    if texts:
        out.append(TextDelta("".join(texts)))
    return out


def gathered(
    parse: Callable[[ServerEvent], Iterable[ProviderEvent]], read: list[ServerEvent]
) -> tuple[list[ProviderEvent], Exception | None]:
    """Every provider event that one network read's server events give, coalesced, and the
    error that stopped them, if any: the events before an error still reach the caller
    (they were received), then the error is raised."""
    out: list[ProviderEvent] = []
    try:
        for sse in read:
            out.extend(parse(sse))
    except Exception as exc:  # noqa: BLE001 (handed back, raised by the caller after the events)
        return coalesced(out), exc
    return coalesced(out), None


_DELTAS = (TextDelta, ToolCallDelta)


class Gatherer:
    """One attempt's network reads, as the batches of events to yield: up to and including the
    attempt's first delta, parsed one server event at a time and yielded as soon as it is
    seen; from then on, each read's events :func:`gathered` whole."""

    __slots__ = ("_delta_seen", "_parse")

    def __init__(self, parse: Callable[[ServerEvent], Iterable[ProviderEvent]]) -> None:
        self._parse = parse
        self._delta_seen = False

    def batches(
        self, read: list[ServerEvent]
    ) -> Iterator[tuple[list[ProviderEvent], Exception | None]]:
        """(events, the error that stopped them or None) for each batch of ``read``; a batch
        with an error is the last."""
        rest = read
        if not self._delta_seen:
            first: list[ProviderEvent] = []
            for i, sse in enumerate(read):
                try:
                    produced = list(self._parse(sse))
                except Exception as exc:  # noqa: BLE001 (handed back, as gathered does)
                    yield coalesced(first), exc
                    return
                first.extend(produced)
                if any(isinstance(event, _DELTAS) for event in produced):
                    self._delta_seen = True
                    rest = read[i + 1 :]
                    yield first, None
                    break
            else:
                yield coalesced(first), None
                return
        if rest:
            yield gathered(self._parse, rest)
