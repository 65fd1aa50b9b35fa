"""JSON logs: one object per line, and the one-line-per-call access log.

:func:`configure` sets up the process's root logger (``switchboard serve`` calls it once);
the formatter writes the record's message and every ``extra`` field. What goes in a call
line is fixed here, and never includes prompts, outputs, keys or other secrets.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry import trace

from service.config.chain_model import LogsConfig

if TYPE_CHECKING:
    from service.interceptors.observe import CallRecord

CALLS_LOGGER = "switchboard.calls"
QUIET_AT_INFO = ("httpx2", "httpx")
"""Loggers held at WARNING unless the level is DEBUG (the SDKs' HTTP client)."""
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    # uvicorn adds ``color_message``: the message again, with terminal colour codes.
    | {"message", "asctime", "taskName", "color_message"}
)


# msgspec encodes a call line several times faster than json.dumps; anything it cannot encode
# is written as its str(), as json.dumps(default=str) did, and ``format(indent=0)`` keeps
# json.dumps's one-line layout (", " and ": "), which people and scripts grep for.
_ENCODER = msgspec.json.Encoder(enc_hook=str)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", **extra, "exc"}`` on one line."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last second's ISO text, up to ":ss"

    def _timestamp(self, created: float) -> str:
        """``datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")``, the
        date and time formatted once per second: split as ``fromtimestamp`` splits it
        (microseconds rounded half to even, carried into the second)."""
        fraction, whole = math.modf(created)
        micros = round(fraction * 1e6)
        if micros >= 1_000_000:
            micros -= 1_000_000
            whole += 1
        second = int(whole)
        cached, text = self._second
        if cached != second:
            text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}
        if record.exc_info:
            extra["exc"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), extra)

    def line(self, created: float, level: str, name: str, msg: str, extra: dict[str, Any]) -> str:
        """What :meth:`format` writes for a record with these attributes (``created`` in
        seconds since the epoch) and ``extra`` fields, without the record."""
        out: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": level,
            "logger": name,
            "msg": msg,
        }
        out.update(extra)
        return msgspec.json.format(_ENCODER.encode(out), indent=0).decode()


def configure(config: LogsConfig) -> None:
    """Send the process's logs to stderr, as JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(config.level)
    # The SDKs' HTTP client logs every upstream request at INFO: a write per call on the
    # loop, and the call line says it better. Its warnings show; at DEBUG, everything.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.NOTSET
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(quiet)


class CallLog:
    """The observe layer's sink that writes one line per call.

    When the line goes, as :func:`configure` sets it up, to one JSON stream handler and
    nowhere else (no filter on the way), it is written after the call's answer has left:
    the lines of the calls that end in one turn of the event loop are formatted by that
    handler's formatter and written to its stream together, under its lock, at the start of
    the next turn. That leaves out logging's per-record work (a ``LogRecord``, the walk of
    loggers and handlers, a write and flush per line), and takes the write off the call's
    path. The level is checked when the call ends, the handlers again when the lines are
    written. Any other set-up (a plain-text format, a file or a capturing handler, a filter)
    gets a ``LogRecord`` per call when it ends, handled by logging.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._log = logging.getLogger(CALLS_LOGGER)
        self._enabled = enabled
        self._lines: list[tuple[float, dict[str, Any]]] = []  # (time.time(), fields)
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a write waits on

    def started(self, record: CallRecord) -> None:
        return None

    def finished(self, record: CallRecord) -> None:
        if not self._enabled or not self._log.isEnabledFor(logging.INFO):
            return
        fields = _fields(record)
        if self._one_stream() is None:
            self._handle(fields)
            return
        self._lines.append((time.time(), fields))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: written now
            self._write()
            return
        # A loop closed with a write pending never ran it: the next loop writes its lines.
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self._write)

    def _one_stream(self) -> logging.StreamHandler[Any] | None:
        """The one handler the call lines go to when it is a JSON stream handler and no
        logger on the way, nor the handler, has a filter; else None."""
        found: list[logging.Handler] = []
        logger: logging.Logger | None = self._log
        while logger is not None:
            if logger.filters:
                return None
            found += logger.handlers
            logger = logger.parent if logger.propagate else None
        if len(found) != 1:
            return None
        handler = found[0]
        if (
            type(handler) is not logging.StreamHandler
            or handler.filters
            or handler.level > logging.INFO
            or not isinstance(handler.formatter, JsonFormatter)
        ):
            return None
        return handler

    def _write(self) -> None:
        """Write the lines waiting: together, when they still go to one JSON stream."""
        self._flush_on = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        handler = self._one_stream()
        if handler is None:  # set up otherwise since they were taken
            for created, fields in lines:
                self._handle(fields, created)
            return
        formatter = handler.formatter
        assert isinstance(formatter, JsonFormatter)
        text = "".join(
            formatter.line(created, "INFO", CALLS_LOGGER, "call", fields) + "\n"
            for created, fields in lines
        )
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:  # noqa: BLE001 (as StreamHandler.emit: reported, not raised)
            handler.handleError(self._record(lines[0][1], lines[0][0]))
        finally:
            handler.release()

    def _record(self, fields: dict[str, Any], created: float | None = None) -> logging.LogRecord:
        # Made here rather than by Logger.info: that would walk the stack for the caller's
        # file and line (findCaller), which no line of ours shows, and check every field
        # against LogRecord's names (none of these is one).
        line = logging.LogRecord(CALLS_LOGGER, logging.INFO, "", 0, "call", None, None)
        if created is not None:  # the call ended before the record was made
            line.created = created
            line.msecs = (created - int(created)) * 1000 // 1
        line.__dict__.update(fields)
        return line

    def _handle(self, fields: dict[str, Any], created: float | None = None) -> None:
        """Hand the line to logging: handlers and filters see it as any other INFO record
        of this logger."""
        self._log.handle(self._record(fields, created))


def _fields(record: CallRecord) -> dict[str, Any]:
    """A call line's fields, in order (read while the call's span is current)."""
    span = trace.get_current_span().get_span_context()
    fields: dict[str, Any] = {
        "event": "call",
        "door": record.method.door,
        "method": record.method.name,
        "code": record.code.name,
        "duration_ms": round(record.duration_s * 1000, 3),
        "request_id": record.request_id,
        "trace_id": format(span.trace_id, "032x") if span.is_valid else "",
        "span_id": format(span.span_id, "016x") if span.is_valid else "",
        "tenant": record.tenant,
        "key_id": record.key_id,
    }
    if record.reason:
        fields["reason"] = record.reason
    if record.guards:
        fields["guards"] = list(record.guards)
    if record.agent:
        fields["agent"] = record.agent
        fields["agent_version"] = record.agent_version
        fields["target"] = record.target
        fields["model"] = record.model
        fields["input_tokens"] = record.input_tokens
        fields["output_tokens"] = record.output_tokens
        fields["cached_input_tokens"] = record.cached_input_tokens
        fields["cost_usd"] = record.cost_usd
        fields["cache_hit"] = record.cache_hit
        fields["attempts"] = record.attempts
        if record.first_token_s is not None:
            fields["ttft_ms"] = round(record.first_token_s * 1000, 3)
    return fields
