"""Something to look at, checked by real tools: the alert rules pass ``promtool check rules``
and their unit tests (``promtool test rules``), the dashboard's queries parse as PromQL, every
metric the dashboard and the rules use is one a real server exports after a few calls, and
the compose stack provisions the dashboard, the rules and Jaeger."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose
from switchboard_client import InvalidArgumentError, ResourceExhaustedError

from tests.chain_helpers import make_keys, scrape
from tests.harness import serve_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "alerts.yml"
RULE_TESTS = DEPLOY / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "switchboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)
# Grafana's variables, as a query would see them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$agent": ".*", "$job": ".*"}
METRIC_NAME = re.compile(r"\b((?:switchboard|process|python)_[a-z0-9_]+)\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def dashboard_queries() -> list[str]:
    """Every panel's PromQL with Grafana's variables filled in, and the variables' queries'
    metric names."""
    board = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append(expr)
    return queries


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


@needs_promtool
def test_the_alert_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 rules found" in checked.stdout


@needs_promtool
def test_every_alert_fires_and_stays_quiet_in_its_unit_tests() -> None:
    tested = yaml.safe_load(RULE_TESTS.read_text())
    alerts = {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]}
    assert alerts == set(rule_expressions())
    ran = promtool("test", "rules", str(RULE_TESTS))
    assert ran.returncode == 0, ran.stdout + ran.stderr


@needs_promtool
def test_a_broken_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    """The check can fail: a threshold moved makes promtool's unit tests fail."""
    (tmp_path / "alerts.yml").write_text(RULES.read_text().replace("> 0.05", "> 0.5"))
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    ran = promtool("test", "rules", str(tmp_path / "alerts.test.yml"))
    assert ran.returncode != 0
    assert "SwitchboardHighErrorRatio" in ran.stdout + ran.stderr


@needs_promtool
def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_shows_what_operators_ask() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "switchboard"
    titles = " | ".join(p["title"] for p in board["panels"])
    for wanted in (
        "Calls per second",
        "error ratio",
        "latency p95",
        "first token p95",
        "Cost by tenant",
        "Cost by agent",
        "Cost by model",
        "Breaker state",
        "Rate-limit refusals",
        "Guard verdicts",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


EXERCISED = """
auth: {{enabled: true, keys_file: {keys}}}
observability: {{metrics: {{port: 0}}}}
rate_limits: {{key: {{requests_per_min: 4}}}}
targets:
  mock-echo: {{provider: mock, model: echo}}
pricing:
  echo: {{input_per_mtok: 1, output_per_mtok: 2}}
guards:
  pii: {{kind: pii, action: redact}}
agents:
  echo: {{route: [mock-echo], guards: {{input: [pii]}}}}
budgets:
  - {{name: daily, tenant: "*", period: day, limit_usd: 25}}
"""


async def test_every_metric_the_dashboard_and_rules_use_is_exported(tmp_path: Path) -> None:
    """A real server, after a few calls (answered, streamed, guarded, refused, rejected):
    each name the dashboard and the alert rules query has samples in its scrape."""
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(EXERCISED.format(keys=keys_file), api_key=keys[0]) as served:
        await served.client.invoke("echo", "write to bob@example.com")
        assert [e async for e in served.client.stream("echo", "hello there")]
        with pytest.raises(InvalidArgumentError):
            await served.client.invoke("echo", [])
        refused = None
        for _ in range(4):
            try:
                await served.client.invoke("echo", "again")
            except ResourceExhaustedError as exc:
                refused = exc
                break
        assert refused is not None
        served.path.write_text("agents: [not, a, mapping]\n")
        assert not await served.app.reload()
        text = await scrape(served.app.metrics_port or 0)
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    used: dict[str, set[str]] = {}
    for where, exprs in (
        ("dashboard", dashboard_queries()),
        ("alerts", list(rule_expressions().values())),
    ):
        for expr in exprs:
            for name in METRIC_NAME.findall(expr):
                used.setdefault(name, set()).add(where)
    assert len(used) >= 12
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, missing


def services() -> dict[str, Any]:
    text = (DEPLOY / "compose.yaml").read_text()
    PyCompose.from_yaml(text).validate()  # a typed Compose-spec parser: unknown keys fail
    result: dict[str, Any] = yaml.safe_load(text)["services"]
    return result


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path → host path, for the service's bind mounts of deploy/."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            result[target] = (DEPLOY / source).resolve()
    return result


def test_compose_prometheus_loads_the_alert_rules() -> None:
    prometheus = services()["prometheus"]
    config_path = Path(prometheus["command"][0].split("=", 1)[1])
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    files = mounts(prometheus)
    for rule_file in config["rule_files"]:
        in_container = config_path.parent / rule_file
        assert files[str(in_container)] == RULES.resolve()


def test_compose_grafana_provisions_the_dashboard_and_its_data_source() -> None:
    every = services()
    grafana = every["grafana"]
    files = mounts(grafana)
    provisioning = files["/etc/grafana/provisioning"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "switchboard.yaml").read_text())[
        "providers"
    ]
    assert files[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    port = every["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["url"] == f"http://prometheus:{port}"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(provider["options"]["path"])
    assert (DASHBOARD.parent / Path(home).name).exists()


def test_compose_traces_go_to_jaeger_over_otlp() -> None:
    every = services()
    assert every["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "jaeger" in every["otel-collector"]["depends_on"]
    collector = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    [exporter] = collector["service"]["pipelines"]["traces"]["exporters"]
    assert exporter.startswith("otlp")
    assert collector["exporters"][exporter]["endpoint"] == "jaeger:4317"
    assert "debug" not in collector["exporters"]
