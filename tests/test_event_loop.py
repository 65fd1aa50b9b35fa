"""``server.event_loop``: the loop ``switchboard serve`` runs on (uvloop unless the config or
``SWITCHBOARD_SERVER__EVENT_LOOP`` says asyncio). The serving process itself is exercised on
the default by the system tests (tests/test_system.py, tests/test_workers.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from service.config import ConfigError, load
from service.serving.loop import loop_factory

CONFIG = """
targets: {m: {provider: mock, model: echo}}
agents: {echo: {route: [m]}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "switchboard.yaml"
    path.write_text(CONFIG)
    return path


def test_serve_runs_on_uvloop_by_default(config: Path) -> None:
    factory = loop_factory(load(config, {}).server.event_loop)
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)


def test_the_environment_turns_uvloop_off(config: Path) -> None:
    snapshot = load(config, {"SWITCHBOARD_SERVER__EVENT_LOOP": "asyncio"})
    assert snapshot.server.event_loop == "asyncio"
    assert loop_factory(snapshot.server.event_loop) is None


def test_an_unknown_loop_is_refused_naming_the_field(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.event_loop: Input should be 'uvloop' or"):
        load(config, {"SWITCHBOARD_SERVER__EVENT_LOOP": "trio"})
