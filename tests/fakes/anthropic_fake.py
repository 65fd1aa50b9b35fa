"""A fake Anthropic Messages server speaking the real wire format.

Use it in a test::

    async with AnthropicFake() as fake:               # listens on 127.0.0.1:<free port>
        fake.push(Scenario(status=529))               # the next request: overloaded
        ... point a target at  base_url: {fake.base_url}  and call Switchboard ...
        assert fake.received[-1].body["system"] == "You are terse."

or on its own: ``python -m tests.fakes.anthropic_fake --port 8090 [--chunk-delay 0.05]``.

``POST /v1/messages`` answers with a :class:`Scenario`: the next one pushed with
:meth:`AnthropicFake.push` (each serves one request, in order), else ``fake.default``.
Streamed replies (``"stream": true``) are named SSE events: ``message_start`` (input usage),
a ``ping``, a text block (``content_block_start``, ``text_delta`` pieces,
``content_block_stop``), each tool call as a ``tool_use`` block whose ``input_json_delta``
pieces split the arguments, ``message_delta`` (stop_reason, output usage) and
``message_stop``. Unary replies are one ``message`` JSON body. Every reply has a
``request-id`` header.

Switches (fields of :class:`Scenario`): ``latency_s`` (before the status line: time to first
byte), ``first_chunk_delay_s`` (after the headers, before the first frame: time to first
token), ``chunk_delay_s`` (between frames), ``status`` + ``error`` (an error reply with Anthropic's
``{"type": "error", "error": {...}}`` body) + ``headers`` (e.g. ``retry-after``), ``hang``,
``stall_after`` + ``stall_s`` (silent for that long after N frames), ``disconnect_after``
(drop the connection after N frames), ``error_after`` (an ``error`` event after N frames),
``omit_stop`` (a clean body without ``message_stop``), ``omit_usage``
(no ``usage`` in ``message_start`` or ``message_delta``, as some compatible servers do);
``cache_read_tokens`` and ``cache_write_5m_tokens`` / ``cache_write_1h_tokens`` fill the
usage's cache fields (``cache_creation_input_tokens`` and its ``cache_creation`` breakdown).

Inspect ``fake.received``, ``fake.connections``, ``fake.abandoned``, ``fake.completed``;
``await fake.wait_for(...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.httpserver import Conn, FakeServer, Frames, Received, split, sse

_ids = itertools.count(1)
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class FakeToolUse:
    name: str
    input_json: str = "{}"
    id: str = ""


@dataclass(frozen=True)
class Scenario:
    """How the fake answers one request. The defaults are a short, whole, text answer."""

    text: str = "Hello from the fake Claude."
    pieces: int = 4
    chunks: tuple[str, ...] = ()  # the text as exactly these deltas (overrides text, pieces)
    tool_uses: tuple[FakeToolUse, ...] = ()
    stop_reason: str | None = None  # default: "tool_use" with tool uses, else "end_turn"
    usage: tuple[int, int] = (15, 8)
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    status: int = 200
    error: dict[str, Any] | None = None  # the inner error object; default by status
    headers: dict[str, str] = field(default_factory=dict)
    latency_s: float = 0.0
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stall_after: int | None = None
    stall_s: float = 0.0
    hang: bool = False
    disconnect_after: int | None = None
    error_after: int | None = None
    stream_error: dict[str, Any] = field(
        default_factory=lambda: {"type": "overloaded_error", "message": "Overloaded"}
    )
    omit_stop: bool = False
    omit_usage: bool = False


class AnthropicFake(FakeServer):
    """See the module docstring."""

    def __init__(self, default: Scenario | None = None) -> None:
        super().__init__()
        self.default = default or Scenario()
        self._queue: deque[Scenario] = deque()

    def push(self, *scenarios: Scenario) -> None:
        """Answer the next requests with ``scenarios``, one each, in order."""
        self._queue.extend(scenarios)

    async def handle(self, request: Received, conn: Conn) -> bool:
        if request.method != "POST" or request.path.rstrip("/") != "/v1/messages":
            body = _error_body(404, {"type": "not_found_error", "message": "Not found"})
            return await self.reply_json(conn, 404, body, _headers())
        scenario = self._queue.popleft() if self._queue else self.default
        if not await self.delay(conn, scenario.latency_s):
            return False
        if scenario.hang:
            return await self.hang(conn)
        headers = _headers(scenario.headers)
        if scenario.status >= 400:
            error = scenario.error or {
                "type": _ERROR_TYPES.get(scenario.status, "api_error"),
                "message": f"fake error {scenario.status}",
            }
            return await self.reply_json(
                conn, scenario.status, _error_body(scenario.status, error), headers
            )
        model = (request.body or {}).get("model", "fake-model")
        if (request.body or {}).get("stream"):
            reply = Frames(
                frames=_frames(scenario, model),
                first_chunk_delay_s=scenario.first_chunk_delay_s,
                chunk_delay_s=scenario.chunk_delay_s,
                stall_after=scenario.stall_after,
                stall_s=scenario.stall_s,
                disconnect_after=scenario.disconnect_after,
                error_after=scenario.error_after,
                error_frame=sse({"type": "error", "error": scenario.stream_error}, "error"),
            )
            return await self.stream(conn, reply, headers)
        return await self.reply_json(conn, 200, _message(scenario, model), headers)


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"request-id": f"req_fake{next(_ids):08d}", **(extra or {})}


def _error_body(status: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"type": "error", "error": error, "request_id": f"req_fake{status}"}


def _stop(scenario: Scenario) -> str:
    return scenario.stop_reason or ("tool_use" if scenario.tool_uses else "end_turn")


def _frames(scenario: Scenario, model: str) -> list[bytes]:
    input_tokens, output_tokens = scenario.usage
    start = {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(scenario, input_tokens, 1),
    }
    if scenario.omit_usage:
        del start["usage"]
    frames = [sse({"type": "message_start", "message": start}, "message_start")]
    index = 0
    if scenario.text or scenario.chunks:
        frames.append(
            sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
                "content_block_start",
            )
        )
        frames.append(sse({"type": "ping"}, "ping"))
        for piece in scenario.chunks or split(scenario.text, scenario.pieces):
            delta = {"type": "text_delta", "text": piece}
            frames.append(
                sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            )
        frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    for i, use in enumerate(scenario.tool_uses, start=index):
        block = {
            "type": "tool_use",
            "id": use.id or f"toolu_fake{i}",
            "name": use.name,
            "input": {},
        }
        frames.append(
            sse(
                {"type": "content_block_start", "index": i, "content_block": block},
                "content_block_start",
            )
        )
        for piece in split(use.input_json, 3):
            delta = {"type": "input_json_delta", "partial_json": piece}
            frames.append(
                sse(
                    {"type": "content_block_delta", "index": i, "delta": delta},
                    "content_block_delta",
                )
            )
        frames.append(sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    frames.append(
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _stop(scenario), "stop_sequence": None},
                **({} if scenario.omit_usage else {"usage": {"output_tokens": output_tokens}}),
            },
            "message_delta",
        )
    )
    if not scenario.omit_stop:
        frames.append(sse({"type": "message_stop"}, "message_stop"))
    return frames


def _message(scenario: Scenario, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = (
        [{"type": "text", "text": scenario.text}] if scenario.text else []
    )
    content += [
        {
            "type": "tool_use",
            "id": u.id or f"toolu_fake{i}",
            "name": u.name,
            "input": json.loads(u.input_json),
        }
        for i, u in enumerate(scenario.tool_uses)
    ]
    input_tokens, output_tokens = scenario.usage
    return {
        "id": f"msg_fake{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop(scenario),
        "stop_sequence": None,
        "usage": _usage(scenario, input_tokens, output_tokens),
    }


def _usage(scenario: Scenario, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    written = scenario.cache_write_5m_tokens + scenario.cache_write_1h_tokens
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": scenario.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": scenario.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": scenario.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
    }


async def _main() -> None:
    parser = argparse.ArgumentParser(description="A fake Anthropic Messages server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--text", default=Scenario.text)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    fake = AnthropicFake(
        Scenario(text=args.text, chunk_delay_s=args.chunk_delay, latency_s=args.latency)
    )
    await fake.start(port=args.port)
    print(json.dumps({"base_url": fake.base_url}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(_main())
