"""``SWITCHBOARD_SECTION__KEY`` overrides, as ``load(path, environ)`` applies them. These pin
why the override is our own 25 lines rather than pydantic-settings' env source (which the
config's pydantic models could use): a misspelt section is an error naming it (pydantic-settings
ignores a variable whose first level matches no field), values are YAML as in the file (it
takes JSON for lists and mappings), and the environment is a mapping the caller passes (it
reads ``os.environ``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigError, load

CONFIG = """
server: {port: 50051}
targets: {m: {provider: mock, model: echo}}
agents: {echo: {route: [m]}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "switchboard.yaml"
    path.write_text(CONFIG)
    return path


def test_overrides_reach_any_level_with_yaml_values(config: Path) -> None:
    snapshot = load(
        config,
        {
            "SWITCHBOARD_SERVER__PORT": "6000",
            "SWITCHBOARD_SERVER__HTTP__PORT": "6080",
            "SWITCHBOARD_TRANSPORT__PERMIT_KEEPALIVE_WITHOUT_CALLS": "true",
            "SWITCHBOARD_AGENTS__ECHO__SYSTEM_PROMPT": "Say it twice.",
            "SWITCHBOARD_AGENTS__ECHO__OVERRIDABLE_PARAMETERS": "[temperature, stop]",
            "SWITCHBOARD_AGENTS__TWIN__ROUTE": "[m]",  # a whole new agent
            "OTHER__SERVER__PORT": "1",  # not ours
        },
    )
    assert (snapshot.server.port, snapshot.server.http.port) == (6000, 6080)
    assert snapshot.transport.permit_keepalive_without_calls is True
    echo = snapshot.agents["echo"]
    assert echo.system_prompt == "Say it twice."
    assert echo.overridable_parameters == {"temperature", "stop"}
    assert set(snapshot.agents) == {"echo", "twin"}


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("SWITCHBOARD_TRANSPRT__MAX_CONCURRENT_CALLS", "transprt"),
        ("SWITCHBOARD_TRANSPORT__MAX_CONCURENT_CALLS", "transport.max_concurent_calls"),
    ],
)
def test_a_misspelt_override_is_an_error_naming_the_field(
    config: Path, name: str, where: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{where}: Extra inputs are not permitted"):
        load(config, {name: "5"})


def test_an_override_below_a_value_names_the_variable(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_SERVER__PORT__X: server\.port\.x does not"):
        load(config, {"SWITCHBOARD_SERVER__PORT__X": "1"})


def test_a_bad_value_names_the_field(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.port: Input should be a valid integer"):
        load(config, {"SWITCHBOARD_SERVER__PORT": "many"})
