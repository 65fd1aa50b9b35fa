"""One rounding of a wait before retrying, whichever door a caller came through
(service.retry_after): RetryInfo in whole milliseconds, ``Retry-After`` in whole seconds
rounded up (never 0 for a positive wait), ``retry-after-ms`` in milliseconds."""

from __future__ import annotations

import anthropic
import openai
import pytest
from switchboard_client import SwitchboardError

from service.retry_after import delay_ms, delay_seconds
from tests.harness import serve_config

CONFIG = """
server:
  http: {port: 0}
targets:
  short:
    {provider: mock, model: echo, mock: {fail_rate: 1, error: rate_limited, retry_after_s: 0.2}}
  odd:
    {provider: mock, model: echo, mock: {fail_rate: 1, error: rate_limited, retry_after_s: 2.007}}
agents:
  short:
    route: {targets: [short], retry: {max_attempts: 1}}
  odd:
    route: {targets: [odd], retry: {max_attempts: 1}}
"""


@pytest.mark.parametrize(
    ("seconds", "millis", "whole"),
    [(0.2, 200, 1), (0.0004, 1, 1), (1.0, 1000, 1), (1.1, 1100, 2), (2.007, 2007, 3), (0, 0, 0)],
)
def test_a_wait_is_rounded_up_once(seconds: float, millis: int, whole: int) -> None:
    assert delay_ms(seconds) == millis
    assert delay_seconds(seconds) == whole


@pytest.mark.parametrize(("agent", "millis", "header"), [("short", 200, "1"), ("odd", 2007, "3")])
async def test_every_door_says_the_same_wait(agent: str, millis: int, header: str) -> None:
    async with serve_config(CONFIG, http=True) as served:
        with pytest.raises(SwitchboardError) as grpc_door:
            await served.client.invoke(agent, "x")
        assert grpc_door.value.retry_after_s == millis / 1000  # RetryInfo: whole milliseconds

        openai_sdk = openai.AsyncOpenAI(
            base_url=served.http_url + "/v1", api_key="unused", max_retries=0, timeout=30
        )
        async with openai_sdk:
            with pytest.raises(openai.APIStatusError) as openai_door:
                await openai_sdk.chat.completions.create(
                    model=agent, messages=[{"role": "user", "content": "x"}]
                )
        headers = openai_door.value.response.headers
        assert headers["retry-after"] == header  # never "0" for a positive wait
        assert headers["retry-after-ms"] == str(millis)

        anthropic_sdk = anthropic.AsyncAnthropic(
            base_url=served.http_url, api_key="unused", max_retries=0, timeout=30
        )
        async with anthropic_sdk:
            with pytest.raises(anthropic.APIStatusError) as anthropic_door:
                await anthropic_sdk.messages.create(
                    model=agent, max_tokens=10, messages=[{"role": "user", "content": "x"}]
                )
        assert anthropic_door.value.response.headers["retry-after"] == header
