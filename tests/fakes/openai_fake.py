"""A fake OpenAI Chat Completions server speaking the real wire format.

Use it in a test::

    async with OpenAIFake() as fake:                  # listens on 127.0.0.1:<free port>
        fake.push(Scenario(status=429, headers={"retry-after": "7"}))   # the next request
        ... point a target at  base_url: {fake.base_url}/v1  and call Switchboard ...
        assert fake.received[-1].body["stream_options"] == {"include_usage": True}

or on its own: ``python -m tests.fakes.openai_fake --port 8089 [--chunk-delay 0.05]``.

``POST /v1/chat/completions`` answers with a :class:`Scenario`: the next one pushed with
:meth:`OpenAIFake.push` (each serves one request, in order), else ``fake.default``. Streamed
replies (``"stream": true``) are SSE ``data:`` lines: a role chunk, the text in pieces, each
tool call as a first chunk (index, id, name) followed by its arguments split across chunks,
a chunk with the ``finish_reason``, a usage-only chunk (``choices: []``) when the request set
``stream_options.include_usage``, and ``data: [DONE]``. Unary replies are one
``chat.completion`` JSON body. Every reply has an ``x-request-id`` header.

Switches (fields of :class:`Scenario`): ``after_requests`` (no reply until that many requests
have arrived: a barrier for concurrent calls), ``latency_s`` (before the status line: time to first
byte), ``first_chunk_delay_s`` (after the headers, before the first frame: time to first
token), ``chunk_delay_s`` (between frames), ``status`` + ``error`` (an error reply with OpenAI's
``{"error": {...}}`` body, or ``error_body`` as it is) + ``headers`` (e.g. ``retry-after``),
``hang``, ``stall_after`` + ``stall_s`` (silent for that long after N frames),
``disconnect_after`` (drop the connection after N frames), ``error_after`` (an in-stream error
object after N frames), ``omit_finish`` / ``omit_done`` (a clean but truncated stream: no chunk
with a ``finish_reason``, no ``data: [DONE]``), ``omit_usage`` (no usage chunk although the
request asked for one, as Ollama, llama.cpp and other compatible servers do: the stream is
still whole; in a unary reply, no ``usage``); ``cached_tokens`` and ``reasoning_tokens`` fill
the usage's details.

Inspect ``fake.received`` (every request: path, headers, JSON body, connection number),
``fake.connections``, ``fake.abandoned`` and ``fake.completed``; ``await fake.wait_for(...)``.
``fake.replies`` has, per chat completion, the scenario it was answered with and how far the
reply got (the frames written, or whether the whole JSON body was). ``choose``: a function of
the request that picks its scenario (before the pushed ones and the default).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.httpserver import Conn, FakeServer, Frames, Received, split, sse

_ids = itertools.count(1)


@dataclass
class Reply:
    """One chat completion answered: its request, its scenario, and how far the reply got:
    ``frames`` (streamed: ``frames.written`` of them) or ``whole`` (a JSON body written)."""

    request: Received
    scenario: Scenario
    frames: Frames | None = None
    whole: bool = False


@dataclass(frozen=True)
class FakeToolCall:
    name: str
    arguments: str = "{}"
    id: str = ""


@dataclass(frozen=True)
class Scenario:
    """How the fake answers one request. The defaults are a short, whole, text answer."""

    text: str = "Hello from the fake OpenAI."
    pieces: int = 4
    chunks: tuple[str, ...] = ()  # the text as exactly these deltas (overrides text, pieces)
    tool_calls: tuple[FakeToolCall, ...] = ()
    finish_reason: str | None = None  # default: "tool_calls" with tool calls, else "stop"
    usage: tuple[int, int] = (12, 6)
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    status: int = 200
    error: dict[str, Any] | None = None
    error_body: dict[str, Any] | None = None  # the whole error body (servers that skip "error")
    headers: dict[str, str] = field(default_factory=dict)
    latency_s: float = 0.0
    after_requests: int = 0  # hold the reply until this many requests have arrived (<= 10 s)
    first_chunk_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    stall_after: int | None = None
    stall_s: float = 0.0
    hang: bool = False
    disconnect_after: int | None = None
    error_after: int | None = None
    stream_error: dict[str, Any] = field(
        default_factory=lambda: {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    )
    omit_done: bool = False
    omit_usage: bool = False
    omit_finish: bool = False


class OpenAIFake(FakeServer):
    """See the module docstring."""

    def __init__(
        self,
        default: Scenario | None = None,
        choose: Callable[[Received], Scenario | None] | None = None,
    ) -> None:
        super().__init__()
        self.default = default or Scenario()
        self.choose = choose
        self.replies: list[Reply] = []
        self._queue: deque[Scenario] = deque()

    def push(self, *scenarios: Scenario) -> None:
        """Answer the next requests with ``scenarios``, one each, in order."""
        self._queue.extend(scenarios)

    async def handle(self, request: Received, conn: Conn) -> bool:
        if request.method != "POST" or not request.path.rstrip("/").endswith("/chat/completions"):
            return await self.reply_json(
                conn,
                404,
                _error(f"Unknown request URL: {request.path}", "invalid_request_error"),
                _headers(),
            )
        scenario = self.choose(request) if self.choose is not None else None
        if scenario is None:
            scenario = self._queue.popleft() if self._queue else self.default
        reply = Reply(request, scenario)
        self.replies.append(reply)
        if scenario.after_requests:
            await self.wait_for(lambda: len(self.received) >= scenario.after_requests)
        if not await self.delay(conn, scenario.latency_s):
            return False
        if scenario.hang:
            return await self.hang(conn)
        headers = _headers(scenario.headers)
        if scenario.status >= 400:
            body = scenario.error_body or {"error": scenario.error or _error_body(scenario.status)}
            return await self.reply_json(conn, scenario.status, body, headers)
        model = (request.body or {}).get("model", "fake-model")
        if (request.body or {}).get("stream"):
            include_usage = ((request.body or {}).get("stream_options") or {}).get("include_usage")
            reply.frames = Frames(
                frames=_frames(scenario, model, include_usage=bool(include_usage)),
                first_chunk_delay_s=scenario.first_chunk_delay_s,
                chunk_delay_s=scenario.chunk_delay_s,
                stall_after=scenario.stall_after,
                stall_s=scenario.stall_s,
                disconnect_after=scenario.disconnect_after,
                error_after=scenario.error_after,
                error_frame=sse({"error": scenario.stream_error}),
            )
            return await self.stream(conn, reply.frames, headers)
        reply.whole = await self.reply_json(conn, 200, _completion(scenario, model), headers)
        return reply.whole


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "x-request-id": f"req_fake{next(_ids):08d}",
        "openai-processing-ms": "3",
        **(extra or {}),
    }


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _error_body(status: int) -> dict[str, Any]:
    kinds = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "requests",
    }
    return _error(f"fake error {status}", kinds.get(status, "server_error"))["error"]


def _finish(scenario: Scenario) -> str:
    return scenario.finish_reason or ("tool_calls" if scenario.tool_calls else "stop")


def _usage(scenario: Scenario) -> dict[str, Any]:
    prompt, completion = scenario.usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": scenario.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": scenario.reasoning_tokens},
    }


def _frames(scenario: Scenario, model: str, *, include_usage: bool) -> list[bytes]:
    base = {
        "id": f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice], **({"usage": None} if include_usage else {})})

    frames = [chunk({"role": "assistant", "content": "", "refusal": None})]
    pieces = scenario.chunks or split(scenario.text, scenario.pieces)
    frames += [chunk({"content": piece}) for piece in pieces]
    for i, call in enumerate(scenario.tool_calls):
        call_id = call.id or f"call_fake{i}"
        first = {"index": i, "id": call_id, "type": "function"}
        frames.append(
            chunk({"tool_calls": [{**first, "function": {"name": call.name, "arguments": ""}}]})
        )
        frames += [
            chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            for piece in split(call.arguments, 3)
        ]
    if not scenario.omit_finish:
        frames.append(chunk({}, _finish(scenario)))
    if include_usage and not scenario.omit_usage:
        frames.append(sse({**base, "choices": [], "usage": _usage(scenario)}))
    if not scenario.omit_done:
        frames.append(sse("[DONE]"))
    return frames


def _completion(scenario: Scenario, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": scenario.text or None,
        "refusal": None,
    }
    if scenario.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id or f"call_fake{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for i, c in enumerate(scenario.tool_calls)
        ]
    return {
        "id": f"chatcmpl-fake{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(scenario)}
        ],
        **({} if scenario.omit_usage else {"usage": _usage(scenario)}),
    }


async def _main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI Chat Completions server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--text", default=Scenario.text)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    fake = OpenAIFake(
        Scenario(text=args.text, chunk_delay_s=args.chunk_delay, latency_s=args.latency)
    )
    await fake.start(port=args.port)
    print(json.dumps({"base_url": f"{fake.base_url}/v1"}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(_main())
