"""The first ten minutes: what a newcomer runs first works as the README says. The runtime
lock holds no dev tools (``make run`` installs only it), every command-line option has help
text, and ``switchboard --version`` names the installed version."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from service.cli import _parser

ROOT = Path(__file__).resolve().parent.parent


def pins(path: Path) -> dict[str, str]:
    """``name -> version`` of a pip-compile lock file."""
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in found}


def required_by(name: str) -> set[str]:
    """What needs ``name`` in the runtime lock, from pip-compile's ``# via`` comments."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.lower().startswith(f"{name}=="))
    via: set[str] = set()
    for line in lines[start + 1 :]:
        if not line.startswith("    #"):
            break
        words = line.strip("# ").removeprefix("via").split()
        via.update(w.lower() for w in words[:1])
    return via


def declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = (
        project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    )
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_runtime_lock_has_no_dev_tools_and_agrees_with_the_dev_lock() -> None:
    runtime, dev = pins(ROOT / "requirements.lock"), pins(ROOT / "requirements-dev.lock")
    assert declared() <= set(runtime)
    dev_only = declared("dev") - declared()
    assert dev_only, "the dev extra lists the test tools"
    # A dev tool may also be what a runtime dependency needs (cryptography: mcp -> pyjwt);
    # then the runtime lock has it for that dependency, never for the dev extra.
    wanted_by_runtime = {
        name for name in dev_only & set(runtime) if required_by(name) - {"switchboard"}
    }
    assert not dev_only & set(runtime) - wanted_by_runtime, "dev tools in the runtime lock"
    assert {"pytest", "mypy", "ruff", "pip-tools"} <= dev_only
    assert dev_only <= set(dev)
    # The dev lock is the runtime lock plus the dev tools, at the same versions.
    assert {name: dev.get(name) for name in runtime} == runtime


def test_make_run_installs_only_the_runtime_and_moves_ports() -> None:
    plan = subprocess.run(
        ["make", "-n", "-B", "run", "PORT=6000", "HTTP_PORT=6080", "METRICS_PORT=6464"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "requirements.lock" in plan
    assert "requirements-dev.lock" not in plan
    assert "SWITCHBOARD_SERVER__PORT=6000" in plan
    assert "SWITCHBOARD_SERVER__HTTP__PORT=6080" in plan
    assert "SWITCHBOARD_OBSERVABILITY__METRICS__PORT=6464" in plan


def actions(parser: argparse.ArgumentParser, path: str = "switchboard"):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_option_has_help_text() -> None:
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, action in actions(_parser())
        if action.help is None
    ]
    assert not missing
    # Every command has a summary line in `switchboard --help`.
    [commands] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {c.dest for c in commands._choices_actions} == set(commands.choices)
    assert all(c.help for c in commands._choices_actions)


def test_version_prints_the_installed_version() -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run(
        [sys.executable, "-m", "service", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == f"switchboard {expected}"
