"""Provider targets in config, and the provider modules' small pure parts: error mapping
rules that no fake can provoke, Retry-After parsing, sanitising."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest

from service import errors
from service.config import ConfigError, load
from service.providers import anthropic_messages, openai_chat
from service.providers.base import TargetSpec
from service.providers.registry import build_provider
from service.providers.upstream import MAX_UPSTREAM_MESSAGE_CHARS, retry_after_s, sanitize
from service.secrets import Secret

KEY = "sk-proj-abcdefghijklmnop0123456789"
MapError = Callable[[Exception, TargetSpec], errors.SwitchboardError]


def write(tmp_path: Path, targets: str) -> Path:
    path = tmp_path / "switchboard.yaml"
    path.write_text(
        "targets:\n"
        + textwrap.indent(textwrap.dedent(targets), "  ")
        + "agents:\n  a:\n    route: [t]\n"
    )
    return path


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_keyed_provider_without_api_key_fails_at_load(tmp_path: Path, provider: str) -> None:
    path = write(tmp_path, f"t:\n  provider: {provider}\n  model: m\n")

    with pytest.raises(ConfigError) as caught:
        load(path, {})

    assert "targets.t" in str(caught.value)
    assert f"provider '{provider}' needs an api_key" in str(caught.value)


def test_api_key_env_var_unset_fails_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, "t:\n  provider: openai\n  model: m\n  api_key: {env: MY_KEY}\n")

    with pytest.raises(ConfigError, match=r"targets\.t\.api_key: environment variable MY_KEY"):
        load(path, {})


def test_api_key_from_file_is_read_and_never_shown(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    path = write(
        tmp_path, f"t:\n  provider: anthropic\n  model: m\n  api_key: {{file: {key_file}}}\n"
    )

    target = load(path, {}).targets["t"]

    assert target.api_key == Secret(KEY)
    assert KEY not in repr(target)


def test_openai_compatible_needs_a_base_url_but_no_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a base_url"):
        load(write(tmp_path, "t:\n  provider: openai_compatible\n  model: m\n"), {})

    path = write(
        tmp_path,
        "t:\n  provider: openai_compatible\n  model: m\n  base_url: http://127.0.0.1:8000/v1\n",
    )
    target = load(path, {}).targets["t"]
    assert target.api_key is None
    assert target.options["include_usage"] is True


def test_options_of_another_provider_are_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t:\n  provider: openai\n  model: m\n  api_key: {env: K}\n  anthropic: {max_tokens: 5}\n",
    )

    with pytest.raises(ConfigError, match="'anthropic' options apply only to provider anthropic"):
        load(path, {"K": KEY})


def test_base_url_must_be_http(tmp_path: Path) -> None:
    path = write(
        tmp_path, "t:\n  provider: openai\n  model: m\n  api_key: {env: K}\n  base_url: ftp://x\n"
    )

    with pytest.raises(ConfigError, match=r"targets\.t\.base_url"):
        load(path, {"K": KEY})


async def test_factories_build_one_client_per_target() -> None:
    for kind, client_type in (
        ("openai", openai.AsyncOpenAI),
        ("openai_compatible", openai.AsyncOpenAI),
        ("anthropic", anthropic.AsyncAnthropic),
    ):
        provider = build_provider(
            TargetSpec(name="t", provider=kind, model="m", api_key=Secret(KEY))
        )
        assert isinstance(provider.client, client_type)  # type: ignore[attr-defined]
        assert provider.client.max_retries == 0  # type: ignore[attr-defined]
        await provider.aclose()


# --- error mapping the fakes cannot provoke -----------------------------------------------------

TARGET = TargetSpec(name="t", provider="openai", model="m", api_key=Secret(KEY))
REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")


@pytest.mark.parametrize(
    ("exc", "map_error"),
    [
        (openai.APITimeoutError(request=REQUEST), openai_chat.map_error),
        (anthropic.APITimeoutError(request=REQUEST), anthropic_messages.map_error),
        (httpx2.ReadTimeout("read timed out", request=REQUEST), openai_chat.map_error),
        (httpx2.ReadTimeout("read timed out", request=REQUEST), anthropic_messages.map_error),
    ],
)
def test_sdk_timeouts_are_deadline_exceeded(exc: Exception, map_error: MapError) -> None:
    mapped = map_error(exc, TARGET)

    assert isinstance(mapped, errors.DeadlineExceeded)
    assert mapped.retryable


def test_malformed_upstream_data_is_unavailable() -> None:
    response = httpx2.Response(200, request=REQUEST, json={"nonsense": True})
    for exc, map_error in (
        (openai.APIResponseValidationError(response, None), openai_chat.map_error),
        (anthropic.APIResponseValidationError(response, None), anthropic_messages.map_error),
    ):
        assert isinstance(map_error(exc, TARGET), errors.Unavailable)


def test_error_policy_overrides_are_per_instance() -> None:
    response = httpx2.Response(401, request=REQUEST)
    mapped = openai_chat.map_error(
        openai.AuthenticationError("Error code: 401", response=response, body=None), TARGET
    )

    assert isinstance(mapped, errors.Internal)
    assert mapped.counts_against_breaker
    assert not mapped.retryable
    assert not errors.Internal("other").counts_against_breaker


# --- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "Thu, 26 Nov 2026 12:00:30 GMT"}, 30.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, 0.0),
        ({}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s(headers, now=now) == expected


def test_sanitize_removes_keys_and_cuts() -> None:
    text = f"key {KEY} and Bearer abc.def and sk-ant-api03-zzzzzzzzzz " + "y" * 1000
    out = sanitize(text, Secret(KEY))

    assert KEY not in out
    assert "abc.def" not in out
    assert "sk-ant-api03" not in out
    assert len(out) == MAX_UPSTREAM_MESSAGE_CHARS
