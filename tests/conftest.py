"""Shared fixtures: a clean environment and an in-process server built by production wiring."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from switchboard_client import AsyncClient

from tests.harness import Served, serve_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "config" / "switchboard.yaml"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees SWITCHBOARD_* settings from the machine it runs on."""
    for name in list(os.environ):
        if name.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    """The default config, served on a free loopback port."""
    async with serve_config(DEFAULT_CONFIG.read_text()) as s:
        yield s


@pytest.fixture
async def client(served: Served) -> AsyncClient:
    return served.client
