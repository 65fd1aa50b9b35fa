"""The Kubernetes manifests, checked by real tools: ``kubectl kustomize`` (the kustomize that
kubectl embeds, from the dev dependencies) renders the base and every overlay; every resource
passes the Kubernetes JSON schemas (kubernetes-validate, strict) of the oldest release the
manifests promise and of the latest it knows; the ServiceMonitor passes its CRD's schema (the
Prometheus Operator's, vendored); the TLS overlay's probes run against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.app import App
from service.config import load
from service.serving.wiring import AGENT_SERVICE
from tests.certs import Authority

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent  # kubectl comes from the dev dependencies
# The oldest release the manifests work on: preStop's `sleep` action (KEP-3960) is in the API
# from 1.29 but behind an alpha gate there (off by default); beta and on from 1.30, GA in 1.34.
MINIMUM = "1.30.0"
RENDERINGS = ("base", "overlays/example", "overlays/example-tls")
SERVICE_MONITOR_CRD = (
    ROOT / "third_party" / "prometheus-operator" / "monitoring.coreos.com_servicemonitors.yaml"
)
CONTAINER_TLS = "/etc/switchboard/tls"


def kustomize(folder: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [BIN / "kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def renders() -> dict[str, dict[str, dict[str, Any]]]:
    """Each rendering (base and overlays), its resources by kind (one of each)."""
    result = {}
    for name in RENDERINGS:
        resources = kustomize(K8S / name)
        by_kind = {r["kind"]: r for r in resources}
        assert len(by_kind) == len(resources), f"{name}: one resource of each kind"
        result[name] = by_kind
    return result


def crd_schema() -> dict[str, Any]:
    """The ServiceMonitor's v1 schema, strict as the API server's field validation (kubectl's
    default since 1.27): an unknown field is an error wherever the schema lists fields and
    does not keep unknown ones."""
    crd = yaml.safe_load(SERVICE_MONITOR_CRD.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert version["served"]
    assert version["storage"]

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(n) for n in node]
        if not isinstance(node, dict):
            return node
        node = {k: strict(v) for k, v in node.items()}
        keeps_unknown = node.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in node and "additionalProperties" not in node and not keeps_unknown:
            node["additionalProperties"] = False
        return node

    schema: dict[str, Any] = strict(version["schema"]["openAPIV3Schema"])
    return schema


def validate(resource: dict[str, Any], version: str) -> None:
    """Raises a ValidationError when ``resource`` does not pass ``version``'s schema."""
    if resource["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.Draft4Validator(crd_schema()).validate(resource)
    else:
        kubernetes_validate.validate(resource, version, strict=True)


def test_every_rendered_resource_passes_the_schemas_of_the_minimum_and_latest(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    base = {"ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "Service", "ServiceAccount"}  # fmt: skip
    assert set(renders["base"]) == base  # no Secret: created out of band
    extras = {"Namespace", "Secret", "NetworkPolicy", "ServiceMonitor"}
    assert set(renders["overlays/example"]) == base | extras
    assert set(renders["overlays/example-tls"]) == base | extras
    assert kubernetes_validate.latest_version() > MINIMUM
    for resources in renders.values():
        for resource in resources.values():
            for version in (MINIMUM, kubernetes_validate.latest_version()):
                validate(resource, version)


def test_the_schema_checks_can_fail(renders: dict[str, dict[str, dict[str, Any]]]) -> None:
    example = renders["overlays/example"]
    broken = yaml.safe_load(yaml.safe_dump(example["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken, MINIMUM)
    monitor = yaml.safe_load(yaml.safe_dump(example["ServiceMonitor"]))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate(monitor, MINIMUM)
    monitor = yaml.safe_load(yaml.safe_dump(example["ServiceMonitor"]))
    monitor["spec"]["endpoints"][0]["scheme"] = "ftp"
    with pytest.raises(jsonschema.ValidationError, match="ftp"):
        validate(monitor, MINIMUM)


def test_the_minimum_is_real_and_the_docs_state_it(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    # Before 1.29 the API has no preStop sleep at all: the schema check says so.
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(renders["base"]["Deployment"], "1.28.0", strict=True)
    assert container(renders["base"])["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    minor = ".".join(MINIMUM.split(".")[:2])
    operations = (ROOT / "docs" / "operations.md").read_text()
    assert f"Kubernetes {minor} or later" in operations
    assert f"Kubernetes {minor} or later" in (K8S / "base" / "kustomization.yaml").read_text()
    latest = ".".join(kubernetes_validate.latest_version().split(".")[:2])
    assert f"{minor} and {latest} JSON schemas" in operations


def pod(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = rendered["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(rendered: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [only] = pod(rendered)["containers"]
    result: dict[str, Any] = only
    return result


def test_the_pod_runs_non_root_read_only_without_capabilities(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    for rendered in renders.values():
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


def test_probes_are_native_grpc_health_checks_without_tls(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    for name in ("base", "overlays/example"):
        c = container(renders[name])
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert c["readinessProbe"]["grpc"] == {"port": ports["grpc"], "service": AGENT_SERVICE}
        assert c["livenessProbe"]["grpc"] == {"port": ports["grpc"], "service": ""}
        assert c["startupProbe"]["grpc"]["port"] == ports["grpc"]


def mounted(rendered: dict[str, dict[str, Any]], path: str) -> dict[str, Any]:
    """The volume the container mounts at ``path`` (never with subPath, which never sees
    updates of a ConfigMap or Secret)."""
    [mount] = [m for m in container(rendered)["volumeMounts"] if m["mountPath"] == path]
    assert "subPath" not in mount
    [volume] = [v for v in pod(rendered)["volumes"] if v["name"] == mount["name"]]
    return volume


def pod_files(rendered: dict[str, dict[str, Any]], root: Path) -> tuple[Path, dict[str, str]]:
    """The config file the container reads and its environment, with the ConfigMap and the
    example Secret written under ``root`` as the pod would see them (mount paths moved there,
    in the file and in the environment)."""
    c = container(rendered)
    config_arg = Path(c["args"][c["args"].index("--config") + 1])
    configmap = rendered["ConfigMap"]
    assert (
        mounted(rendered, str(config_arg.parent))["configMap"]["name"]
        == (configmap["metadata"]["name"])
    )
    moves = {}
    for mount in c["volumeMounts"]:
        volume = mounted(rendered, mount["mountPath"])
        folder = root / mount["name"]
        folder.mkdir(exist_ok=True)
        moves[mount["mountPath"]] = str(folder)
        if "secret" in volume and volume["secret"]["secretName"] == "switchboard-secrets":
            for name, value in rendered["Secret"]["stringData"].items():
                (folder / name).write_text(value)

    pattern = re.compile("|".join(re.escape(m) for m in sorted(moves, key=len, reverse=True)))

    def move(text: str) -> str:  # in one pass: a moved path is never moved again
        return pattern.sub(lambda found: moves[found.group(0)], text)

    path = root / config_arg.name
    path.write_text(move(configmap["data"][config_arg.name]))
    return path, {e["name"]: move(e["value"]) for e in c["env"]}


async def test_the_configmap_and_example_secret_make_a_config_serve_accepts(
    renders: dict[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    from service.commands import check_config  # noqa: PLC0415 (the server: only here)

    rendered = renders["overlays/example"]
    path, env = pod_files(rendered, tmp_path)
    snapshot = await check_config(str(path), env)
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    assert snapshot.server.host == "0.0.0.0"
    assert snapshot.server.port == ports["grpc"]
    assert snapshot.server.http.port == ports["http"]
    assert snapshot.observability.metrics.port == ports["metrics"]
    assert snapshot.observability.metrics.host == "0.0.0.0"
    assert snapshot.auth.enabled  # not on loopback: keys required
    assert snapshot.state.backend == "shared"  # replicas share state
    assert snapshot.postgres_dsn is not None  # read from the Secret's file
    assert snapshot.reload.watch is True
    assert snapshot.server.tls is None
    base = (K8S / "base" / "switchboard.yaml").read_text()
    assert rendered["ConfigMap"]["data"]["switchboard.yaml"] == base


def test_termination_grace_covers_prestop_and_the_drain(
    renders: dict[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    rendered = renders["overlays/example"]
    path, env = pod_files(rendered, tmp_path)
    grace_s = load(path, env).server.grace_s
    pre_stop_s = container(rendered)["lifecycle"]["preStop"]["sleep"]["seconds"]
    period = pod(rendered)["terminationGracePeriodSeconds"]
    # Long enough for preStop and the whole drain, not so long that a hung pod lingers.
    assert pre_stop_s + grace_s < period <= pre_stop_s + grace_s + 15


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_hpa_pdb_and_secret_point_at_the_pods(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    rendered = renders["overlays/example"]
    labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selects(rendered["Service"]["spec"]["selector"], labels)
    assert selects(rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    assert selects(rendered["Deployment"]["spec"]["selector"]["matchLabels"], labels)
    container_ports = {p["name"] for p in container(rendered)["ports"]}
    assert {p["targetPort"] for p in rendered["Service"]["spec"]["ports"]} <= container_ports
    target = rendered["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        rendered["Deployment"]["metadata"]["name"],
    )
    assert rendered["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2  # with the PDB
    secret = mounted(rendered, "/etc/switchboard/secrets")["secret"]["secretName"]
    assert secret == rendered["Secret"]["metadata"]["name"]
    assert mounted(renders["base"], "/etc/switchboard/secrets")["secret"]["secretName"] == secret


def test_the_example_puts_everything_in_its_restricted_namespace(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    for name in ("overlays/example", "overlays/example-tls"):
        rendered = renders[name]
        namespace = rendered["Namespace"]["metadata"]
        assert namespace["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for kind, resource in rendered.items():
            if kind != "Namespace":
                assert resource["metadata"]["namespace"] == namespace["name"], kind


def rule_ports(rule: dict[str, Any]) -> set[tuple[str, int | str]]:
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


def test_the_network_policy_admits_callers_prometheus_and_what_the_pods_call(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    rendered = renders["overlays/example"]
    policy = rendered["NetworkPolicy"]["spec"]
    assert selects(
        policy["podSelector"]["matchLabels"],
        rendered["Deployment"]["spec"]["template"]["metadata"]["labels"],
    )
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}  # default deny both ways
    named = {p["name"] for p in container(rendered)["ports"]}
    ingress = {
        frozenset(peer["namespaceSelector"]["matchLabels"].items()): rule_ports(rule)
        for rule in policy["ingress"]
        for peer in rule["from"]
    }
    assert ingress == {
        frozenset({("switchboard-client", "true")}): {("TCP", "grpc"), ("TCP", "http")},
        frozenset({("kubernetes.io/metadata.name", "monitoring")}): {("TCP", "metrics")},
    }
    assert {port for ports in ingress.values() for _, port in ports} <= named
    egress = [rule_ports(rule) for rule in policy["egress"]]
    assert {("UDP", 53), ("TCP", 53)} in egress  # DNS
    assert {("TCP", 5432), ("TCP", 6379)} in egress  # PostgreSQL and Redis
    assert {("TCP", 4317), ("TCP", 4318)} in egress  # OTLP
    [providers] = [rule for rule in policy["egress"] if rule_ports(rule) == {("TCP", 443)}]
    blocks = [peer["ipBlock"] for peer in providers["to"]]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    assert "10.0.0.0/8" in blocks[0]["except"]  # not the cluster's own addresses


def test_the_service_monitor_scrapes_the_services_metrics_port(
    renders: dict[str, dict[str, dict[str, Any]]],
) -> None:
    rendered = renders["overlays/example"]
    monitor = rendered["ServiceMonitor"]["spec"]
    service = rendered["Service"]
    assert selects(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    [endpoint] = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["port"] == "metrics"
    assert (endpoint["path"], endpoint["scheme"]) == ("/metrics", "http")


def probe_commands(rendered: dict[str, dict[str, Any]]) -> Iterator[list[str]]:
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        yield container(rendered)[name]["exec"]["command"]


async def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    """``argv``'s exit status and stdout; stderr too unless ``env`` is given (then the
    process gets only ``env``, and stderr goes to the test's)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT if env is None else None,
        env=None if env is None else {"PATH": f"{BIN}:/usr/bin:/bin", **env},
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_the_tls_overlay_serves_tls_its_probes_pass_and_keys_come_from_admin_service(
    renders: dict[str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    rendered = renders["overlays/example-tls"]
    c = container(rendered)
    tls = mounted(rendered, CONTAINER_TLS)["secret"]
    assert tls["secretName"] == "switchboard-tls"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["SWITCHBOARD_SERVER__TLS__CERT_FILE"] == f"{CONTAINER_TLS}/tls.crt"
    assert env["SWITCHBOARD_SERVER__TLS__KEY_FILE"] == f"{CONTAINER_TLS}/tls.key"
    assert all("appProtocol" not in p for p in rendered["Service"]["spec"]["ports"])

    path, env = pod_files(rendered, tmp_path)
    # The Secret as cert-manager writes it, for the name the probes check.
    authority = Authority()
    folder = Path(env["SWITCHBOARD_SERVER__TLS__CERT_FILE"]).parent
    authority.issue("switchboard", server=True, names=("switchboard",)).write(folder, "tls")
    authority.write(folder, "ca")
    # This machine has no PostgreSQL/Redis at the pod's addresses, nor its ports free.
    env |= {
        "SWITCHBOARD_STATE__BACKEND": "embedded",
        "SWITCHBOARD_STATE__DATA_DIR": str(tmp_path / "data"),
        "SWITCHBOARD_OBSERVABILITY__METRICS__PORT": "0",
    }
    # The first admin key from the command line, into the state store the config names.
    code, admin_key = await run(
        [str(BIN / "switchboard"), "keys", "--config", str(path), "create", "--tenant", "ops",
         "--scope", "admin"], env,
    )  # fmt: skip
    assert code == 0
    app = App(load(path, env), environ=env)
    port = await app.start("127.0.0.1", 0, http_port=0)
    try:
        address = f"127.0.0.1:{port}"
        # Every further key through AdminService, over TLS only, then a call with it.
        ca = str(folder / "ca.crt")
        grpcurl = [str(BIN / "grpcurl"), "-cacert", ca]
        code, out = await run(
            [*grpcurl, "-H", f"authorization: Bearer {admin_key.strip()}",
             "-d", '{"tenant": "acme", "agents": ["echo"]}',
             address, "switchboard.v1.AdminService/CreateKey"],
        )  # fmt: skip
        assert code == 0, out
        secret = json.loads(out)["secret"]
        invoke = (
            '{"agent": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hi"}]}]}'
        )
        code, out = await run(
            [*grpcurl, "-H", f"authorization: Bearer {secret}", "-d", invoke,
             address, "switchboard.v1.AgentService/Invoke"],
        )  # fmt: skip
        assert code == 0, out
        assert '"text": "hi"' in out
        for command in probe_commands(rendered):
            assert command[0] == "switchboard"
            argv = [str(BIN / "switchboard"), *command[1:]]
            argv = [re.sub(r"127\.0\.0\.1:50051", address, a) for a in argv]
            argv = [a.replace(CONTAINER_TLS, str(folder)) for a in argv]
            code, out = await run(argv)
            assert code == 0, out
        # The base's plaintext probe cannot speak to it.
        code, out = await run([str(BIN / "switchboard"), "health", "--address", address])
        assert code == 1, out
    finally:
        await app.stop(1)


def test_health_imports_none_of_the_server() -> None:
    """``switchboard health`` runs every few seconds as an exec probe: it loads the probe
    only (the server's imports cost about 1.9 s of CPU, the probe's 0.2 s)."""
    code = (
        "import sys\n"
        "from service.cli import main\n"
        "assert main(['health', '--address', '127.0.0.1:1', '--timeout', '1']) == 1\n"
        "loaded = [m for m in ('service.app', 'service.commands', 'service.config') "
        "if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
