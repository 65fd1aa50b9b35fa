"""A target's requests are the one its SDK built for the first (service/providers/sending.py):
same URL, headers and body, only the read timeout new; sent through the environment's proxy."""

from __future__ import annotations

import pytest
from switchboard_client import AsyncClient

from tests.fakes.httpserver import FakeServer, Received
from tests.fakes.openai_fake import OpenAIFake
from tests.harness import serve_config
from tests.provider_rigs import ANTHROPIC_KEY, OPENAI_KEY, anthropic_rig, openai_rig

pytestmark = pytest.mark.asyncio

PER_REQUEST = {"content-length", "x-stainless-read-timeout", "x-stainless-timeout"}


def same_headers(received: list[Received]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.headers.items() if k not in PER_REQUEST} for r in received]


async def calls(fake: FakeServer, client: AsyncClient, agent: str) -> list[Received]:
    """An Invoke, a Stream and an Invoke again, each with a non-ASCII prompt."""
    await client.invoke(agent, "Grüße, 東京 ✓")
    async for _ in client.stream(agent, "Grüße, 東京 ✓"):
        pass
    await client.invoke(agent, "Grüße, 東京 ✓")
    assert len(fake.received) == 3
    return fake.received


async def test_openai_later_requests_are_the_sdks_first() -> None:
    async with openai_rig() as rig:
        first, streamed, later = await calls(rig.fake, rig.client, "chat")
    assert [r.path for r in (first, streamed, later)] == ["/v1/chat/completions"] * 3
    assert same_headers([first]) == same_headers([streamed]) == same_headers([later])
    assert first.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert first.headers["x-stainless-retry-count"] == "0"
    assert float(later.headers["x-stainless-read-timeout"]) > 0
    assert later.body == first.body  # the SDK's JSON and ours, parsed: the same request
    assert streamed.body == {
        **first.body,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert later.body["messages"][-1]["content"] == "Grüße, 東京 ✓"


async def test_anthropic_later_requests_are_the_sdks_first() -> None:
    async with anthropic_rig() as rig:
        first, streamed, later = await calls(rig.fake, rig.client, "chat")
    assert [r.path for r in (first, streamed, later)] == ["/v1/messages"] * 3
    assert same_headers([first]) == same_headers([streamed]) == same_headers([later])
    assert first.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert "anthropic-version" in first.headers
    assert float(later.headers["x-stainless-timeout"]) > 0
    assert later.body == first.body
    assert streamed.body == first.body  # Messages requests always stream here


PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


async def test_the_environments_proxy_carries_requests_no_proxy_exempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``http_proxy`` names the proxy every request to a target goes through (absolute-form
    request lines), and ``no_proxy`` exempts a host, as httpx2's ``trust_env`` had it."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    async with OpenAIFake() as proxy, OpenAIFake() as direct:
        monkeypatch.setenv("http_proxy", proxy.base_url)
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")  # the test's own gRPC channel too
        config = f"""
        targets:
          far: {{provider: openai, model: gpt-fake, base_url: "http://upstream.invalid/v1",
                 api_key: {{env: OPENAI_API_KEY}}}}
          near: {{provider: openai, model: gpt-fake, base_url: "{direct.base_url}/v1",
                  api_key: {{env: OPENAI_API_KEY}}}}
        agents:
          far: {{route: [far]}}
          near: {{route: [near]}}
        """
        async with serve_config(config, {"OPENAI_API_KEY": OPENAI_KEY}) as served:
            for agent in ("far", "near"):
                await calls(proxy if agent == "far" else direct, served.client, agent)
    assert [r.path for r in proxy.received] == ["http://upstream.invalid/v1/chat/completions"] * 3
    assert {r.headers["host"] for r in proxy.received} == {"upstream.invalid"}
    assert [r.path for r in direct.received] == ["/v1/chat/completions"] * 3
