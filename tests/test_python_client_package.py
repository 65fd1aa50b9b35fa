"""The light ``switchboard-client`` package: ``pip install ./clients/python`` brings grpcio and
protobuf only, and the README's Python snippet runs as written against the real server."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.harness import Served

pytestmark = pytest.mark.system


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"pip install \./clients/python.*?```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "the README's client snippet"
    return found[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("client")
    # Built from a copy: setuptools builds in the source tree (build/, *.egg-info).
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "clients" / "python", source / "clients" / "python", ignore=ignore)
    shutil.copytree(ROOT / "generated", source / "generated", ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
         str(source / "clients" / "python")],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    return target


def test_it_depends_on_grpcio_and_protobuf_only(installed: Path) -> None:
    names = {
        re.sub(r"-[^-]*\.dist-info$", "", p.name).lower().replace("_", "-")
        for p in installed.glob("*.dist-info")
    }
    # grpcio itself needs typing-extensions.
    assert names <= {"switchboard-client", "grpcio", "protobuf", "typing-extensions"}, names
    assert {"switchboard-client", "grpcio", "protobuf"} <= names


async def test_the_readmes_snippet_runs_with_the_package_alone(
    installed: Path, served: Served
) -> None:
    code = readme_snippet().replace("127.0.0.1:50051", served.address)
    # -S: no site-packages, so only what the package installed can be imported.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-S", "-c", code, env={"PYTHONPATH": str(installed)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "hello"
    assert lines[1].startswith("AGENT_NOT_FOUND ")
    assert lines[2] == "start"
    assert lines[-1] == "finish"
