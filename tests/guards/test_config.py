"""Guard config errors name the field; guards are compiled into each agent of a snapshot."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from service.config import ConfigError, load
from service.guards import NO_GUARDS

BASE = """
targets:
  echo: {provider: mock, model: echo}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchboard.yaml"
    path.write_text(BASE + textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """
            agents:
              a: {route: [echo], guards: {input: [nope]}}
            """,
            r"agents\.a\.guards\.input\[0\]: no guard named 'nope'",
        ),
        (
            """
            guards:
              shape: {kind: json_schema}
            agents:
              a: {route: [echo], guards: {input: [shape]}}
            """,
            r"agents\.a\.guards\.input\[0\]: a json_schema guard does not apply to input",
        ),
        (
            """
            guards:
              r: {kind: regex, patterns: {x: '(?<=a)b'}}
            agents:
              a: {route: [echo]}
            """,
            r"guards\.r: pattern 'x' is not valid RE2",
        ),
        (
            """
            guards:
              e: {kind: external, url: "http://127.0.0.1:1/x"}
            agents:
              a: {route: [echo]}
            """,
            r"guards\.e\.external\.fail_mode",
        ),
        (
            """
            guards:
              l: {kind: length, action: redact, max_chars: 3}
            agents:
              a: {route: [echo]}
            """,
            r"guards\.l\.length\.action",
        ),
    ],
)
def test_bad_guard_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(write(tmp_path, text), {})


def test_guards_are_compiled_into_the_agents_and_change_their_version(tmp_path: Path) -> None:
    guarded = """
    guards:
      pii: {kind: pii}
      words: {kind: denied_terms, terms: [x]}
    agents:
      a: {route: [echo], guards: {input: [pii], output: [pii, words]}}
      b: {route: [echo]}
    """
    snapshot = load(write(tmp_path, guarded), {})
    a = snapshot.agents["a"]
    assert [g.name for g in a.guards.input] == ["pii"]
    assert [g.name for g in a.guards.output] == ["pii", "words"]
    assert snapshot.agents["b"].guards == NO_GUARDS
    changed = load(write(tmp_path, guarded.replace("terms: [x]", "terms: [y]")), {})
    assert changed.agents["a"].version != a.version  # cached answers of the old guard: not served
    assert changed.agents["b"].version == snapshot.agents["b"].version
