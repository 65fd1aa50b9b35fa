"""The contract for other languages: buf's managed mode (buf.gen.yaml) gives every file its
Go, Java and C# package options, google.rpc (the error details) is in the workspace with its
own options, and what generators receive carries the comments. Checked by running
``buf generate`` with the real buf.gen.yaml's managed section and a local plugin that reports
what it was given (the template's own plugins run remotely, out of reach of tests)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

BUF = shutil.which("buf") or str(Path(sys.executable).parent / "buf")


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gen")
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    template["plugins"] = [
        {
            "local": [sys.executable, str(ROOT / "tests" / "protoc_gen_options.py")],
            "out": str(out),
            "strategy": "all",
        }
    ]
    path = out / "buf.gen.yaml"
    path.write_text(yaml.safe_dump(template))
    subprocess.run([BUF, "generate", "--template", str(path)], cwd=ROOT, check=True, timeout=120)
    found: dict[str, Any] = json.loads((out / "options.json").read_text())
    return found


@pytest.mark.parametrize("name", ["agent", "session", "usage"])
def test_every_contract_file_gets_package_options(options: dict[str, Any], name: str) -> None:
    got = options[f"switchboard/v1/{name}.proto"]
    assert got["go_package"] == "switchboard.dev/gen/go/switchboard/v1;switchboardv1"
    assert got["java_package"] == "dev.switchboard.v1"
    assert got["java_multiple_files"] is True
    assert got["csharp_namespace"] == "Switchboard.V1"
    assert got["comments"] > 0


def test_the_error_details_are_generated_with_their_own_packages(options: dict[str, Any]) -> None:
    details = options["google/rpc/error_details.proto"]
    assert details["go_package"].startswith("google.golang.org/genproto/googleapis/rpc/")
    assert details["java_package"] == "com.google.rpc"
    assert "google/rpc/status.proto" in options
