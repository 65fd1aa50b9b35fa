"""The Python client's stream: leaving the loop or dropping the stream cancels the call, and
the server stops the upstream work (issue 11, section 6)."""

from __future__ import annotations

import asyncio
import gc
import time

from switchboard_client import AsyncClient, Client

from service.providers.mock import MockProvider
from tests.harness import serve_config
from tests.waiting import eventually, wait_for

# 60 words at 10 tokens/s: six seconds to answer whole, so a cut-short call is plain.
CONFIG = """
targets:
  slow:
    provider: mock
    model: echo
    mock: {tokens_per_s: 10}
agents:
  slow: {route: [slow]}
"""
WORDS = " ".join(f"w{i}" for i in range(60))


async def test_leaving_the_loop_or_dropping_the_stream_cancels_the_call() -> None:
    async with serve_config(CONFIG) as served:
        client: AsyncClient = served.client
        mock = served.app.providers["slow"]
        assert isinstance(mock, MockProvider)

        async def cancelled(count: int, what: str) -> None:
            await wait_for(lambda: mock.stats.cancelled == count, timeout_s=20, what=what)
            assert mock.stats.completed == 0

        # 1. break out of a loop over a stream nobody keeps
        async for event in client.stream("slow", WORDS):
            if event.WhichOneof("event") == "text_delta":
                break
        await cancelled(1, "the call a loop left to be cancelled")

        # 2. break out of a loop over a stream the caller keeps (the case)
        kept = client.stream("slow", WORDS)
        async for event in kept:
            if event.WhichOneof("event") == "text_delta":
                break
        await cancelled(2, "the call a loop over a kept stream left to be cancelled")

        # 3. read with anext() and drop the stream
        dropped = client.stream("slow", WORDS)
        assert (await anext(dropped)).WhichOneof("event") == "start"
        del dropped
        gc.collect()
        await cancelled(3, "the dropped stream's call to be cancelled")

        # 4. leave an ``async with`` block
        async with client.stream("slow", WORDS) as events:
            assert (await anext(events)).WhichOneof("event") == "start"
        await cancelled(4, "the call an async with block left to be cancelled")
        del kept

        # The ledger has the four calls as cut short: failed, and not the whole answer.
        async def recorded() -> bool:
            usage = await client.get_usage()
            return bool(usage.groups) and usage.groups[0].failed_calls == 4

        await eventually(recorded, timeout_s=20)
        [group] = (await client.get_usage()).groups
        assert group.calls == 4
        assert group.output_tokens < 4 * 60


async def test_the_blocking_clients_stream_cancels_too() -> None:
    async with serve_config(CONFIG) as served:
        mock = served.app.providers["slow"]
        assert isinstance(mock, MockProvider)

        def read_one_and_leave() -> None:
            with Client(served.address) as client:
                kept = client.stream("slow", WORDS)
                for _ in kept:
                    break
                # The loop is left; the caller still holds ``kept`` while the server
                # notices the cancellation.
                deadline = time.monotonic() + 20
                while mock.stats.cancelled < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                del kept

        await asyncio.to_thread(read_one_and_leave)
        assert mock.stats.cancelled == 1
        assert mock.stats.completed == 0


async def test_a_stream_with_a_reused_request_id_runs_again_as_the_contract_says() -> None:
    """StreamRequest.request_id is not an idempotency key (unlike Invoke's): see the proto."""
    async with serve_config(CONFIG.replace("tokens_per_s: 10", "tokens_per_s: 1000")) as served:
        mock = served.app.providers["slow"]
        assert isinstance(mock, MockProvider)
        for _ in range(2):
            events = [e async for e in served.client.stream("slow", "hi", request_id="r-1")]
            assert events[0].start.request_id == "r-1"
            assert events[-1].finish.attempts == 1
        assert mock.stats.completed == 2
        # Invoke with the same id runs once more, then answers from its record.
        first = await served.client.invoke("slow", "hi", request_id="r-1")
        again = await served.client.invoke("slow", "hi", request_id="r-1")
        assert again == first
        assert mock.stats.completed == 3
