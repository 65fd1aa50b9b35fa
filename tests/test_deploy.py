"""Deployment artefacts, checked by real tools: hadolint lints the Dockerfile; the compose file
parses with a typed Compose-spec parser; the container config loads as ``serve`` loads it.
The Kubernetes manifests: tests/test_deploy_k8s.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from compose_spec import PyCompose

from service.commands import check_config
from service.config.model import ReloadConfig, TransportConfig, WorkersConfig
from service.observability.otel_env import tracing_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # hadolint comes from the dev dependencies


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [BIN / "hadolint", "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def test_the_image_is_multi_stage_slim_non_root_and_writes_no_bytecode() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [args for op, args in final if op == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"0", "root"}
    env = " ".join(args for op, args in final if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert any(op == "COPY" and args.startswith("--from=") for op, args in final)
    # Every file the build copies exists (and the lock pins what it installs).
    for op, args in (step for stage in stages for step in stage):
        if op == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    install = [args for op, args in stages[0] if op == "RUN" and "pip install" in args]
    assert install
    assert "--constraint requirements.lock" in install[0]


def test_the_compose_file_is_valid_and_wired() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    compose = PyCompose.from_yaml(text)  # a typed Compose-spec parser: unknown keys fail
    compose.validate()
    services: dict[str, Any] = yaml.safe_load(text)["services"]
    assert {"switchboard", "redis", "postgres", "otel-collector", "prometheus"} <= set(services)

    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"

    board = services["switchboard"]
    assert board["read_only"] is True
    assert "/tmp" in board["tmpfs"]
    assert board["cap_drop"] == ["ALL"]
    assert set(board["depends_on"]) == {"redis", "postgres", "otel-collector"}
    # The OTLP endpoint is the collector's gRPC receiver.
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    grpc_port = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":")[-1]
    assert board["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == (
        f"http://otel-collector:{grpc_port}"
    )
    for pipeline in collector["service"]["pipelines"].values():
        assert set(pipeline["receivers"]) <= set(collector["receivers"])
        assert set(pipeline["exporters"]) <= set(collector["exporters"])
    # Prometheus scrapes ports that the services really serve metrics on.
    metrics_port = board["environment"]["SWITCHBOARD_OBSERVABILITY__METRICS__PORT"]
    collector_metrics = collector["exporters"]["prometheus"]["endpoint"].rsplit(":")[-1]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    scraped = {
        target
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for target in c["targets"]
    }
    assert scraped == {f"switchboard:{metrics_port}", f"otel-collector:{collector_metrics}"}


async def test_the_compose_switchboard_config_is_one_serve_accepts(tmp_path: Path) -> None:
    board = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["switchboard"]
    [mount] = [v for v in board["volumes"] if v.endswith("/etc/switchboard/config:ro")]
    host_dir = DEPLOY / mount.split(":")[0]
    config = Path(board["command"][board["command"].index("--config") + 1])
    env = {k: str(v) for k, v in board["environment"].items()}
    snapshot = await check_config(str(host_dir / config.name), env)
    assert snapshot.workers.count == 2
    assert snapshot.observability.metrics.port == 9464
    tracing = tracing_settings(snapshot.observability.tracing, env)
    assert (tracing.exporter, tracing.endpoint) == ("otlp", "http://otel-collector:4317")
    assert snapshot.auth.enabled
    assert snapshot.state.backend == "shared"
    assert snapshot.state.redis_url == "redis://redis:6379/0"


def test_every_operations_setting_is_documented_with_its_default() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text()
    section = readme.split("## Operations settings", 1)[1].split("\n## ", 1)[0]
    documented = yaml.safe_load(section.split("```yaml", 1)[1].split("```", 1)[0])
    for name, model in (
        ("transport", TransportConfig),
        ("reload", ReloadConfig),
        ("workers", WorkersConfig),
    ):
        assert documented[name] == model().model_dump(), name
