"""Shared set-up of the provider tests: a fake upstream, Switchboard serving a config whose
targets point at it, and helpers to read a stream's events and its ending error."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from switchboard.v1 import agent_pb2 as pb
from switchboard_client import AsyncClient, SwitchboardError

from tests.fakes.anthropic_fake import AnthropicFake
from tests.fakes.httpserver import FakeServer
from tests.fakes.openai_fake import OpenAIFake
from tests.harness import Served, serve_config

OPENAI_KEY = "sk-test-0123456789abcdefSECRET"
ANTHROPIC_KEY = "sk-ant-api03-test0123456789SECRET"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ALL_PARAMETERS = "[temperature, max_tokens, top_p, stop, seed, response_format]"

F = TypeVar("F", bound=FakeServer)


@dataclass
class Rig(Generic[F]):
    fake: F
    served: Served

    @property
    def client(self) -> AsyncClient:
        return self.served.client


def openai_config(base_url: str) -> str:
    return f"""
    targets:
      gpt:
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
      gpt-quick:
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
        timeout_s: 0.5
      gpt-capped:
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
        timeout_s: 2
      gpt-streamed:  # a first-token timeout: even Invoke streams (no non-streamed request)
        provider: openai
        model: gpt-fake
        base_url: {base_url}/v1
        api_key: {{env: OPENAI_API_KEY}}
        first_token_timeout_s: 30
      local:
        provider: openai_compatible
        model: llama-fake
        base_url: {base_url}/v1
      local-no-usage:
        provider: openai_compatible
        model: llama-fake
        base_url: {base_url}/v1
        openai: {{include_usage: false}}
    agents:
      chat:
        system_prompt: You are terse.
        route: [gpt]
        overridable_parameters: {ALL_PARAMETERS}
        tools:
          - name: get_weather
            description: Weather for a city.
            parameters: {json.dumps(WEATHER)}
        accepts_caller_tools: true
      chat-streamed:
        system_prompt: You are terse.
        route: [gpt-streamed]
      quick:
        route: [gpt-quick]
      capped:
        route: [gpt-capped]
      local:
        system_prompt: You run locally.
        route: [local]
        overridable_parameters: {ALL_PARAMETERS}
      local-no-usage:
        route: [local-no-usage]
    """


def anthropic_config(base_url: str) -> str:
    return f"""
    targets:
      claude:
        provider: anthropic
        model: claude-fake
        base_url: {base_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
      claude-short:
        provider: anthropic
        model: claude-fake
        base_url: {base_url}
        api_key: {{env: ANTHROPIC_API_KEY}}
        timeout_s: 0.5
        anthropic: {{max_tokens: 256}}
    agents:
      chat:
        system_prompt: You are terse.
        route: [claude]
        overridable_parameters: {ALL_PARAMETERS}
        tools:
          - name: get_weather
            description: Weather for a city.
            parameters: {json.dumps(WEATHER)}
          - name: now
            description: The time.
            parameters: {{type: object, properties: {{}}}}
      short:
        route: [claude-short]
      json:
        route: [claude]
        overridable_parameters: [response_format]
    """


OPENAI_AGENTS = ("chat", "chat-streamed", "quick", "capped", "local", "local-no-usage")
ANTHROPIC_AGENTS = ("chat", "short", "json")
"""Every agent of :func:`openai_config` / :func:`anthropic_config`: one per target."""


async def warm(rig: Rig[F], agents: tuple[str, ...]) -> None:
    """One answered call to every target, so the calls a test makes are later requests
    (the SDK builds a target's first request, body included, and later ones reuse its URL
    and headers with a body of their own: :mod:`service.providers.sending`). What the
    warm-up sent is forgotten."""
    for agent in agents:
        await rig.client.invoke(agent, "warm up")
    rig.fake.forget()


@contextlib.asynccontextmanager
async def openai_rig(*, warmed: bool = False) -> AsyncIterator[Rig[OpenAIFake]]:
    """A fake OpenAI upstream and Switchboard serving :func:`openai_config` against it;
    ``warmed``: every target has answered once (:func:`warm`)."""
    async with (
        OpenAIFake() as fake,
        serve_config(openai_config(fake.base_url), {"OPENAI_API_KEY": OPENAI_KEY}) as served,
    ):
        rig = Rig(fake, served)
        if warmed:
            await warm(rig, OPENAI_AGENTS)
        yield rig


@contextlib.asynccontextmanager
async def anthropic_rig(*, warmed: bool = False) -> AsyncIterator[Rig[AnthropicFake]]:
    """A fake Anthropic upstream and Switchboard serving :func:`anthropic_config` against it;
    ``warmed``: every target has answered once (:func:`warm`)."""
    async with (
        AnthropicFake() as fake,
        serve_config(
            anthropic_config(fake.base_url), {"ANTHROPIC_API_KEY": ANTHROPIC_KEY}
        ) as served,
    ):
        rig = Rig(fake, served)
        if warmed:
            await warm(rig, ANTHROPIC_AGENTS)
        yield rig


async def collect(
    client: AsyncClient, agent: str, conversation: object, **kw: object
) -> tuple[list[pb.StreamResponse], SwitchboardError | None]:
    """Every event of a stream, and the error that ended it (None if it finished)."""
    events: list[pb.StreamResponse] = []
    try:
        async for event in client.stream(agent, conversation, **kw):  # type: ignore[arg-type]
            events.append(event)  # noqa: PERF401 (keep what arrived before an error)
    except SwitchboardError as exc:
        return events, exc
    return events, None


def kinds(events: list[pb.StreamResponse]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]
