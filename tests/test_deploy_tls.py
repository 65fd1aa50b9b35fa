"""The TLS-only compose deployment (deploy/compose.yaml + deploy/compose.tls.yaml), validated,
then run as processes (no Docker engine here): the same config file and environment, the
certificates made by deploy/tls/make-certs.sh, shared state on PostgreSQL and Redis, the
first admin key from `switchboard keys`, further keys through AdminService over TLS with
grpcurl, the compose health check over TLS, and plaintext refused."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from compose_spec import PyCompose

from service.config import load
from tests.backends import POSTGRES_DSN, REDIS_URL, postgres_schema, redis_prefix
from tests.processes import ROOT, serve_process

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
GRPCURL = str(BIN / "grpcurl")
CONTAINER_TLS = "/etc/switchboard/tls"
CONTAINER_SECRETS = "/etc/switchboard/secrets"

pytestmark = pytest.mark.system


def _merged() -> dict[str, Any]:
    """The switchboard service of the base file with the TLS file over it (Compose's merge:
    mappings merge, ``volumes`` append, ``healthcheck.test`` is replaced)."""
    base = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["switchboard"]
    tls = yaml.safe_load((DEPLOY / "compose.tls.yaml").read_text())["services"]["switchboard"]
    merged = dict(base)
    merged["environment"] = {**base["environment"], **tls["environment"]}
    merged["volumes"] = [*base["volumes"], *tls["volumes"]]
    merged["healthcheck"] = {**base["healthcheck"], **tls["healthcheck"]}
    return merged


def test_the_tls_compose_file_is_valid_and_layers_over_the_base() -> None:
    text = (DEPLOY / "compose.tls.yaml").read_text()
    PyCompose.from_yaml(text).validate()
    board = _merged()
    env = board["environment"]
    assert env["SWITCHBOARD_SERVER__TLS__CERT_FILE"].startswith(CONTAINER_TLS + "/")
    assert env["SWITCHBOARD_SERVER__TLS__KEY_FILE"].startswith(CONTAINER_TLS + "/")
    assert f"./tls:{CONTAINER_TLS}:ro" in board["volumes"]
    assert (DEPLOY / "tls" / "make-certs.sh").exists()
    test = board["healthcheck"]["test"]
    assert test[test.index("--ca-file") + 1] == f"{CONTAINER_TLS}/ca.crt"
    full = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    full["services"]["switchboard"] = board
    PyCompose.from_yaml(yaml.safe_dump(full)).validate()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*argv: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
        env={"PATH": f"{BIN}:/usr/bin:/bin", **env},
    )  # fmt: skip


async def test_a_tls_only_deployment_with_keys_made_through_admin_service(
    tmp_path: Path,
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs, secrets = tmp_path / "tls", tmp_path / "secrets"
    secrets.mkdir()
    made = _run("bash", str(DEPLOY / "tls" / "make-certs.sh"), str(certs), env={})
    assert made.returncode == 0, made.stderr
    board = _merged()
    http_port, metrics_port = _free_port(), _free_port()
    async with postgres_schema() as schema, redis_prefix() as prefix:
        # The compose environment, with the container's paths and neighbours mapped to this
        # machine's (the same files, the shared PostgreSQL and Redis of the tests).
        env = {
            k: str(v).replace(CONTAINER_TLS, str(certs)).replace(CONTAINER_SECRETS, str(secrets))
            for k, v in board["environment"].items()
        }
        env.update(
            SWITCHBOARD_STATE__POSTGRES_DSN=POSTGRES_DSN,
            SWITCHBOARD_STATE__POSTGRES_SCHEMA=schema,
            SWITCHBOARD_STATE__REDIS_URL=REDIS_URL,
            SWITCHBOARD_STATE__REDIS_PREFIX=prefix,
            SWITCHBOARD_AUTH__KEYS_FILE=str(secrets / "keys.yaml"),
            SWITCHBOARD_OBSERVABILITY__TRACING__EXPORTER="none",
            SWITCHBOARD_OBSERVABILITY__METRICS__PORT=str(metrics_port),
            SWITCHBOARD_SERVER__HTTP__PORT=str(http_port),
        )
        mount = next(v for v in board["volumes"] if v.endswith("/etc/switchboard/config:ro"))
        config_arg = Path(board["command"][board["command"].index("--config") + 1])
        config = DEPLOY / mount.split(":")[0] / config_arg.name
        snapshot = load(config, env)
        assert snapshot.server.tls is not None
        assert snapshot.auth.enabled

        # The first admin key: the command line, into the shared store.
        first = _run("switchboard", "keys", "--config", str(config), "create", "--tenant", "ops",
                     "--scope", "admin", env=env)  # fmt: skip
        assert first.returncode == 0, first.stderr
        admin_key = first.stdout.strip()

        with serve_process(config, environ=env) as server:
            address = f"127.0.0.1:{server.port}"
            # The compose health check, against this process's port.
            check = [a.replace(CONTAINER_TLS, str(certs)) for a in board["healthcheck"]["test"]]
            check = [a.replace("127.0.0.1:50051", address) for a in check[1:]]
            healthy = _run(*check, env={})
            assert healthy.returncode == 0, healthy.stderr + server.output

            ca = str(certs / "ca.crt")
            created = _run(
                GRPCURL, "-cacert", ca, "-H", f"authorization: Bearer {admin_key}",
                "-d", '{"tenant": "acme", "agents": ["echo"], "note": "compose"}',
                address, "switchboard.v1.AdminService/CreateKey", env={},
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            secret = json.loads(created.stdout)["secret"]
            invoke = (
                '{"agent": "echo", "messages": [{"role": "ROLE_USER", '
                '"content": [{"text": "over tls"}]}]}'
            )
            answered = _run(
                GRPCURL, "-cacert", ca, "-H", f"authorization: Bearer {secret}", "-d", invoke,
                address, "switchboard.v1.AgentService/Invoke", env={},
            )  # fmt: skip
            assert answered.returncode == 0, answered.stderr
            assert "over tls" in answered.stdout
            plain = _run(GRPCURL, "-plaintext", "-connect-timeout", "3", address, "list", env={})
            assert plain.returncode != 0
            # The HTTP listener is HTTPS with the same certificate.
            context = ssl.create_default_context(cafile=ca)
            async with httpx2.AsyncClient(verify=context, timeout=10) as http:
                models = await http.get(
                    f"https://127.0.0.1:{http_port}/v1/models",
                    headers={"authorization": f"Bearer {secret}"},
                )
            assert models.status_code == 200
            assert [m["id"] for m in models.json()["data"]] == ["echo"]
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=60) == 0, server.output
