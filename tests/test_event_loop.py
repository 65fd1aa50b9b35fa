"""The server's event loop: uvloop where installed (service/serving/loop.py)."""

from __future__ import annotations

import asyncio

from switchboard_client.errors import NotFoundError

from service.serving import loop as event_loop
from tests.harness import serve_config

CONFIG = """
targets:
  m: {provider: mock, model: echo}
agents:
  echo: {route: [m]}
"""


def test_serve_runs_on_uvloop_and_answers() -> None:
    async def main() -> tuple[str, str]:
        async with serve_config(CONFIG) as served:
            answer = await served.client.invoke("echo", "hello loop")
        return type(asyncio.get_running_loop()).__module__, answer.message.content[0].text

    module, text = event_loop.run(main())
    assert module.startswith("uvloop"), module
    assert "hello loop" in text


def test_a_grpc_error_status_crosses_uvloop_intact() -> None:
    async def main() -> str:
        async with serve_config(CONFIG) as served:
            try:
                await served.client.invoke("no-such-agent", "hi")
            except NotFoundError as exc:
                return str(exc)
        raise AssertionError("the call should have failed")

    assert "no agent named 'no-such-agent'" in event_loop.run(main())
