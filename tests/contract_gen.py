"""Code for other languages from the contract, as a user gets it: ``buf generate`` with the
repository's buf.gen.yaml (its managed mode: go_package, java_package…), with local plugins in
place of the remote ones (the Buf Schema Registry is not reachable here)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

BUF = ROOT / ".venv" / "bin" / "buf"


def needed(commands: Iterable[str], paths: Iterable[Path] = ()) -> pytest.MarkDecorator:
    """Skip when a tool is missing, except in CI, which must have them (.ci/run installs
    them): there the test runs and says what is missing."""
    missing = [c for c in commands if shutil.which(c) is None]
    missing += [str(p) for p in paths if not p.exists()]
    return pytest.mark.skipif(
        bool(missing) and not os.environ.get("CI"), reason=f"not installed: {', '.join(missing)}"
    )


async def generate(
    out: Path,
    plugins: Mapping[str, Mapping[str, Any]],
    paths: Iterable[str] = ("proto/switchboard",),
) -> Path:
    """Run ``buf generate`` for ``paths`` (the contract; add third_party/googleapis/google/rpc
    for the error details' types) into ``out``; ``plugins`` maps a local plugin (a command,
    or ``builtin:java`` for one built into protoc) to its ``out`` (under ``out``) and
    ``opt``. Returns ``out``.

    Raises:
        AssertionError: buf failed (its error output in the message).
    """
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    template["plugins"] = [
        {
            **(
                {"protoc_builtin": name.removeprefix("builtin:")}
                if name.startswith("builtin:")
                else {"local": shutil.which(name) or name}
            ),
            **spec,
        }
        for name, spec in plugins.items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    config = out / "buf.gen.yaml"
    config.write_text(yaml.safe_dump(template))
    process = await asyncio.create_subprocess_exec(
        str(BUF), "generate", "--template", str(config), *(f"--path={p}" for p in paths),
        "-o", str(out), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, err.decode()
    return out
