"""A fast fake OpenAI Chat Completions upstream for the peer benchmark (bench/peers.py).

Answers ``POST …/chat/completions`` with bytes built once at start: a ``chat.completion`` JSON
body, or, when the request body asks for ``"stream": true``, an SSE stream of ``--chunks``
content chunks, a finish chunk, a usage chunk (``choices: []``) and ``data: [DONE]``, each
event its own HTTP chunk, all written at once (the upstream is never the slow part). HTTP/1.1
keep-alive; the request is parsed no further than needed (headers, Content-Length, the stream
flag), so the fake costs little next to the gateways it feeds.

    python bench/fast_upstream.py --port 8089 [--chunks 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import cast

WORD = "tok "


def completion(chunks: int) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": WORD * chunks, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
        "system_fingerprint": "fp_bench",
    }
    data = json.dumps(body).encode()
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\nx-request-id: req-bench\r\n\r\n"
    )
    return head.encode() + data


def stream(chunks: int) -> bytes:
    created = int(time.time())
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": created,
        "model": "bench-model",
        "system_fingerprint": "fp_bench",
    }

    def choice(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events: list[object] = [choice({"role": "assistant", "content": "", "refusal": None})]
    events += [choice({"content": WORD}) for _ in range(chunks)]
    events.append(choice({}, "stop"))
    events.append(
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": 12,
                "completion_tokens": chunks,
                "total_tokens": 12 + chunks,
            },
        }
    )
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\nx-request-id: req-bench\r\n\r\n"
    )
    out = [head]
    frames = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n".encode() for e in events]
    frames.append(b"data: [DONE]\n\n")
    out += [b"%x\r\n%s\r\n" % (len(f), f) for f in frames]
    out.append(b"0\r\n\r\n")
    return b"".join(out)


class Upstream(asyncio.Protocol):
    """One connection. ``served`` (shared by all) counts requests, ``GET /count`` included:
    it answers the count, itself counted."""

    def __init__(self, unary: bytes, streamed: bytes, served: list[int]) -> None:
        self.served = served
        self._unary = unary
        self._streamed = streamed
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at)
                length = int(head[at + 15 : line_end if line_end > 0 else len(head)])
            if len(self._buffer) < end + 4 + length:
                return
            body = self._buffer[end + 4 : end + 4 + length]
            self._buffer = self._buffer[end + 4 + length :]
            assert self._transport is not None
            if head.startswith(b"get /count"):
                self.served[0] += 1
                count = str(self.served[0]).encode()
                self._transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(count), count)
                )
                continue
            self.served[0] += 1
            compact = body.replace(b" ", b"")
            wants_stream = b'"stream":true' in compact
            self._transport.write(self._streamed if wants_stream else self._unary)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=50)
    args = parser.parse_args()
    unary, streamed = completion(args.chunks), stream(args.chunks)
    loop = asyncio.get_running_loop()
    served = [0]
    server = await loop.create_server(
        lambda: Upstream(unary, streamed, served), "127.0.0.1", args.port, backlog=1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
