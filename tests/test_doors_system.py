"""The HTTP doors in a real server process: SIGTERM drains an OpenAI stream in flight, new
HTTP calls are refused while it drains (503 ``draining``), and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import openai
import pytest

from tests.test_system import free_port, server_process

pytestmark = pytest.mark.system

CONFIG = """
server:
  grace_s: 20
  http: {{port: {http_port}}}
auth:
  enabled: false
targets:
  slow: {{provider: mock, model: echo, mock: {{tokens_per_s: 20}}}}
agents:
  slow: {{route: [slow]}}
"""


async def test_sigterm_drains_an_openai_stream_and_exits_0(tmp_path: Path) -> None:
    http_port = free_port()
    config = tmp_path / "doors.yaml"
    config.write_text(CONFIG.format(http_port=http_port))
    words = " ".join(f"w{i}" for i in range(30))  # ~1.5 s of streaming
    async with server_process(config, free_port()) as process:
        base = f"http://127.0.0.1:{http_port}/v1"
        async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="slow", messages=[{"role": "user", "content": words}], stream=True
            )
            chunks = aiter(stream)
            first = await anext(chunks)
            assert first.choices[0].delta.role == "assistant"

            process.send_signal(signal.SIGTERM)

            refused: openai.InternalServerError | None = None
            async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as other:
                while refused is None:  # bounded by the stream still running: drain refuses
                    try:
                        await other.chat.completions.create(
                            model="slow", messages=[{"role": "user", "content": "hi"}]
                        )
                    except openai.InternalServerError as error:
                        refused = error
            assert refused.status_code == 503
            assert refused.code == "draining"  # type: ignore[attr-defined]
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        assert text == words
        assert await asyncio.to_thread(process.wait, 30) == 0
