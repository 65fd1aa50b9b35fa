"""Upper bounds of a call's tokens, for reservations (budgets, tokens-per-minute limits).

A reservation must never be below what the call can cost, or a concurrent burst overspends.
The bounds:

- **Input**: the UTF-8 byte count of everything sent (system prompt, messages, tool calls and
  results, tool definitions) plus ``MESSAGE_OVERHEAD_TOKENS`` per message and per tool, plus
  ``IMAGE_TOKENS_BOUND`` per image part. Byte-level BPE tokenizers (OpenAI's tiktoken
  encodings, Anthropic's) never make a token of less than one byte, so a text of ``n`` bytes
  is at most ``n`` tokens whatever its script (one-letter words, digits, code, CJK); the
  overhead covers the role markers and separators chat templates add (a few tokens a
  message in OpenAI's published counting recipe).
- **Output**: ``max_tokens`` when the request or agent sets it (the upstream stops there);
  else the model's published maximum output (``MAX_OUTPUT_TOKENS``, matched like prices:
  exact name, then the longest prefix); else ``DEFAULT_OUTPUT_TOKENS``, which is a guess,
  not a bound: set ``max_tokens`` for models not in the table.

The settlement replaces the bound by the real usage, so a generous bound costs nothing but
headroom while the call runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from service.domain import Message, TextPart, Tool

if TYPE_CHECKING:
    from service.agents.spec import AgentSpec

MESSAGE_OVERHEAD_TOKENS = 8
# An image part. Anthropic: about width*height/750 tokens for at most ~1.15 megapixels
# (~1600); OpenAI: at most 1536 patches times 1.62 for the mini/nano models (~2500), 765
# + 85 at high detail for gpt-4o. Rounded up.
IMAGE_TOKENS_BOUND = 3000
DEFAULT_OUTPUT_TOKENS = 4096

# Published maximum output tokens (OpenAI model pages; Anthropic's models overview), by
# model name prefix.
MAX_OUTPUT_TOKENS: Mapping[str, int] = {
    "gpt-4o": 16_384,
    "gpt-4o-mini": 16_384,
    "gpt-4.1": 32_768,
    "gpt-4.1-mini": 32_768,
    "gpt-4.1-nano": 32_768,
    "o3-mini": 100_000,
    "claude-3-haiku": 4_096,
    "claude-3-5-haiku": 8_192,
    "claude-3-5-sonnet": 8_192,
    "claude-3-7-sonnet": 64_000,
    "claude-sonnet-4": 64_000,
    "claude-opus-4": 32_000,
}


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def input_bound(system_prompt: str, messages: Sequence[Message], tools: Iterable[Tool] = ()) -> int:
    """At most this many input tokens (see the module docstring)."""
    return agent_bound(system_prompt, tools) + history_bound(messages)


def agent_bound(system_prompt: str, tools: Iterable[Tool]) -> int:
    """An agent's share of :func:`input_bound`: its system prompt and its tools (computed
    once per agent: :attr:`service.agents.spec.AgentSpec.input_tokens`). The request's
    messages add :func:`history_bound`, its own tools :func:`tools_bound`."""
    return MESSAGE_OVERHEAD_TOKENS + _bytes(system_prompt) + tools_bound(tools)


def tools_bound(tools: Iterable[Tool]) -> int:
    """At most this many input tokens for offering ``tools``: their share of
    :func:`input_bound`."""
    total = 0
    for tool in tools:
        schema = json.dumps(dict(tool.parameters), default=str)
        total += MESSAGE_OVERHEAD_TOKENS + _bytes(tool.name) + _bytes(tool.description)
        total += _bytes(schema)
    return total


def history_bound(messages: Sequence[Message]) -> int:
    """At most this many input tokens for ``messages`` (a request's, or a session's history
    sent besides them): their share of :func:`input_bound`."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + _bytes(message.tool_call_id)
        for part in message.content:
            total += _bytes(part.text) if isinstance(part, TextPart) else IMAGE_TOKENS_BOUND
        for call in message.tool_calls:
            total += MESSAGE_OVERHEAD_TOKENS
            total += _bytes(call.id) + _bytes(call.name) + _bytes(call.arguments_json)
    return total


def output_bound(model: str, max_tokens: int | None) -> int:
    """At most this many output tokens of ``model`` (see the module docstring)."""
    if max_tokens is not None:
        return max_tokens
    exact = MAX_OUTPUT_TOKENS.get(model)
    if exact is not None:
        return exact
    prefixes = [name for name in MAX_OUTPUT_TOKENS if model.startswith(name)]
    return MAX_OUTPUT_TOKENS[max(prefixes, key=len)] if prefixes else DEFAULT_OUTPUT_TOKENS


def attempts_at_once(agent: AgentSpec | None) -> int:
    """How many attempts of one call can be answering at once: two when the agent's route
    hedges (a slow attempt and its hedge), else one. Each reserves its bound."""
    return 2 if agent is not None and agent.routing is not None and agent.routing.hedge else 1


def call_bound(
    agent: AgentSpec | None,
    text_bytes: int,
    messages: int,
    images: int,
    max_tokens: int | None,
) -> int:
    """At most this many tokens (input and output) for a request to ``agent`` whose own
    messages hold ``text_bytes`` bytes of text and ``images`` images: the agent's system
    prompt and tools, the request's messages, and the output bound of the dearest target
    (``max_tokens`` from the request, else the agent's). Session history is not included
    (the pipeline adds :func:`history_bound` once it has loaded it), and an attempt past
    the first reserves its own (:class:`service.routing.tab.Tab`). A hedging route counts
    two attempts (:func:`attempts_at_once`). Without the agent (an unknown name: the call
    fails before the upstream), only the request's text."""
    request_in = text_bytes + MESSAGE_OVERHEAD_TOKENS * messages + IMAGE_TOKENS_BOUND * images
    if agent is None:
        return max(1, request_in)
    limit = max_tokens if max_tokens is not None else agent.parameters.max_tokens
    output = max((output_bound(t.model, limit) for t in agent.route), default=0)
    one = agent.input_tokens + request_in + output
    return one * attempts_at_once(agent)
