"""Deployment artefacts, checked by real tools: kustomize renders deploy/k8s and every resource
passes the Kubernetes JSON schemas (strict); hadolint lints the Dockerfile; the compose file
parses with a typed Compose-spec parser; the container config loads as ``serve`` loads it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from service.app import AGENT_SERVICE
from service.cli import check_config
from service.config import load
from service.config.model import ReloadConfig, TransportConfig, WorkersConfig
from service.observability.otel_env import tracing_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent  # kubectl and hadolint come from the dev dependencies
KUBERNETES_VERSION = "1.32.0"  # the oldest release these manifests promise to work on


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    """``kubectl kustomize deploy/k8s``, by kind."""
    out = subprocess.run(
        [BIN / "kubectl", "kustomize", str(DEPLOY / "k8s")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    resources = [doc for doc in yaml.safe_load_all(out) if doc]
    by_kind = {r["kind"]: r for r in resources}
    assert len(by_kind) == len(resources), "one resource of each kind"
    return by_kind


def test_every_rendered_resource_passes_the_kubernetes_schemas(
    rendered: dict[str, dict[str, Any]],
) -> None:
    assert set(rendered) == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    }
    for version in (KUBERNETES_VERSION, kubernetes_validate.latest_version()):
        for resource in rendered.values():
            kubernetes_validate.validate(resource, version, strict=True)


def test_the_schema_check_can_fail(rendered: dict[str, dict[str, Any]]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(rendered["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def pod(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = rendered["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = pod(rendered)["containers"]
    result: dict[str, Any] = only
    return result


def test_the_pod_runs_non_root_read_only_without_capabilities(
    rendered: dict[str, dict[str, Any]],
) -> None:
    assert pod(rendered)["securityContext"]["runAsNonRoot"] is True
    assert pod(rendered)["securityContext"]["runAsUser"] != 0
    security = container(rendered)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # The only writable place is /tmp, an emptyDir.
    mounts = {m["mountPath"]: m for m in container(rendered)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(rendered)["volumes"]}
    writable = [path for path, m in mounts.items() if not m.get("readOnly")]
    assert writable == ["/tmp"]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    resources = container(rendered)["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_probes_are_native_grpc_health_checks(rendered: dict[str, dict[str, Any]]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    c = container(rendered)
    assert c["readinessProbe"]["grpc"] == {"port": ports["grpc"], "service": AGENT_SERVICE}
    assert c["livenessProbe"]["grpc"] == {"port": ports["grpc"], "service": ""}
    assert c["startupProbe"]["grpc"]["port"] == ports["grpc"]


def served_config(rendered: dict[str, dict[str, Any]], tmp_path: Path) -> Path:
    """The config file the container reads: the ConfigMap's key, at the path in ``args``, with
    the Secret's files written where the pod mounts them (moved under ``tmp_path``)."""
    c = container(rendered)
    config_arg = Path(c["args"][c["args"].index("--config") + 1])
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_arg.parent)]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    [volume] = [v for v in pod(rendered)["volumes"] if v["name"] == mount["name"]]
    configmap = rendered["ConfigMap"]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    [secret_mount] = [m for m in c["volumeMounts"] if m["name"] == "secrets"]
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, value in rendered["Secret"]["stringData"].items():
        (secrets / name).write_text(value)
    text = configmap["data"][config_arg.name]
    assert secret_mount["mountPath"] in text
    path = tmp_path / config_arg.name
    path.write_text(text.replace(secret_mount["mountPath"], str(secrets)))
    return path


async def test_the_configmap_is_a_config_that_serve_accepts(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    env = {e["name"]: e["value"] for e in container(rendered)["env"]}
    snapshot = await check_config(str(served_config(rendered, tmp_path)), env)
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    assert snapshot.server.host == "0.0.0.0"
    assert snapshot.server.port == ports["grpc"]
    assert snapshot.observability.metrics.port == ports["metrics"]
    assert snapshot.observability.metrics.host == "0.0.0.0"
    assert snapshot.auth.enabled  # not on loopback: keys required
    assert snapshot.state.backend == "shared"  # replicas share state
    assert snapshot.postgres_dsn is not None  # read from the Secret's file
    assert snapshot.reload.watch is True
    assert (DEPLOY / "k8s" / "switchboard.yaml").read_text() == rendered["ConfigMap"]["data"][
        "switchboard.yaml"
    ]


def test_termination_grace_covers_prestop_and_the_drain(
    rendered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    grace_s = load(served_config(rendered, tmp_path), {}).server.grace_s
    pre_stop_s = container(rendered)["lifecycle"]["preStop"]["sleep"]["seconds"]
    period = pod(rendered)["terminationGracePeriodSeconds"]
    # Long enough for preStop and the whole drain, not so long that a hung pod lingers.
    assert pre_stop_s + grace_s < period <= pre_stop_s + grace_s + 15


def test_service_hpa_and_pdb_point_at_the_pods(rendered: dict[str, dict[str, Any]]) -> None:
    labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    assert selects(rendered["Service"]["spec"]["selector"])
    assert selects(rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert selects(rendered["Deployment"]["spec"]["selector"]["matchLabels"])
    container_ports = {p["name"] for p in container(rendered)["ports"]}
    assert {p["targetPort"] for p in rendered["Service"]["spec"]["ports"]} <= container_ports
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        rendered["Deployment"]["metadata"]["name"],
    )
    assert rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2  # with the PDB
    secret_volumes = [v for v in pod(rendered)["volumes"] if "secret" in v]
    assert [v["secret"]["secretName"] for v in secret_volumes] == [
        rendered["Secret"]["metadata"]["name"]
    ]


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
