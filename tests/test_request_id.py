"""A caller's request_id is checked where it enters: a bad one is INVALID_ARGUMENT naming
``request_id`` before any idempotency claim or log line uses it."""

from __future__ import annotations

import json
import logging

import pytest
from switchboard_client import AsyncClient, InvalidArgumentError

from service.observability.logging import CALLS_LOGGER, JsonFormatter

BAD_IDS = ["has space", "new\nline", "caf\u00e9", "tab\there", "slash/es", "r" * 129]


@pytest.mark.parametrize("request_id", BAD_IDS)
async def test_a_bad_request_id_is_invalid_argument(client: AsyncClient, request_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.invoke("echo", "hi", request_id=request_id)
    assert raised.value.message.startswith("request_id:")
    assert [v.subject for v in raised.value.violations] == ["request_id"]

    with pytest.raises(InvalidArgumentError) as streamed:
        async for _ in client.stream("echo", "hi", request_id=request_id):
            pass
    assert streamed.value.message.startswith("request_id:")


async def test_a_bad_request_id_never_reaches_the_call_log(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad = "evil id\nforged=1"
    with pytest.raises(InvalidArgumentError):
        await client.invoke("echo", "hi", request_id=bad)
    formatter = JsonFormatter()
    calls = [json.loads(formatter.format(r)) for r in caplog.records if r.name == CALLS_LOGGER]
    assert len(calls) == 1
    assert calls[0]["code"] == "INVALID_ARGUMENT"
    assert len(calls[0]["request_id"]) == 32  # a fresh id, not the caller's bad one
    assert "evil id" not in "\n".join(formatter.format(r) for r in caplog.records)


async def test_a_well_formed_request_id_is_kept_and_deduplicates(client: AsyncClient) -> None:
    good = "Order-42.retry_1:a"
    first = await client.invoke("echo", "hi", request_id=good)
    again = await client.invoke("echo", "hi", request_id=good)
    assert first.request_id == again.request_id == good
    assert first == again
