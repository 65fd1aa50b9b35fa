"""TLS and mTLS on both listeners with real certificates (made here with ``cryptography``):
gRPC through grpcio and grpcurl, HTTP through httpx2; a rotated certificate or client CA is
taken without a restart, a broken one is refused and the old one kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2
import pytest
import yaml
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc

from service.app import App
from service.config import ConfigError, load
from service.serving.probe import ProbeTls, probe
from tests.certs import Authority, Pem
from tests.chain_helpers import AGENTS, make_keys, sample, scrape
from tests.waiting import wait_for

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


@dataclass
class Tls:
    folder: Path
    ca: Authority
    server: Pem
    client_ca: Authority | None
    key: str  # an API key of tenant acme
    app: App | None = None

    @property
    def grpc_address(self) -> str:
        assert self.app is not None
        return f"127.0.0.1:{self.app.port}"

    @property
    def http_url(self) -> str:
        assert self.app is not None
        return f"https://127.0.0.1:{self.app.http_port}"


def _config(folder: Path, keys_file: Path, *, mutual: bool) -> str:
    tls = {"cert_file": "server.crt", "key_file": "server.key"}
    if mutual:
        tls["client_ca_file"] = "clients-ca.crt"
    raw = {
        "server": {"http": {"port": 0}, "tls": tls},
        "auth": {"enabled": True, "keys_file": str(keys_file)},
        "reload": {"poll_interval_s": 0.05},
        "state": {"data_dir": str(folder / "data")},
        "observability": {"metrics": {"port": 0}},
        **yaml.safe_load(AGENTS),
    }
    return yaml.safe_dump(raw)


@contextlib.asynccontextmanager
async def tls_server(tmp_path: Path, *, mutual: bool = False) -> AsyncIterator[Tls]:
    tmp_path.mkdir(exist_ok=True)
    ca = Authority("server CA")
    server = ca.issue("switchboard", server=True)
    server.write(tmp_path, "server")
    client_ca = None
    if mutual:
        client_ca = Authority("clients CA")
        client_ca.write(tmp_path, "clients-ca")
    keys_file, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    path = tmp_path / "switchboard.yaml"
    path.write_text(_config(tmp_path, keys_file, mutual=mutual))
    app = App(load(path, {}), environ={})
    await app.start("127.0.0.1", 0, http_port=0)
    try:
        yield Tls(tmp_path, ca, server, client_ca, keys[0], app)
    finally:
        await app.stop(0.5)


def _credentials(ca: bytes, client: Pem | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=None if client is None else client.key,
        certificate_chain=None if client is None else client.cert,
    )


async def _list_agents(tls: Tls, ca: bytes, client: Pem | None = None) -> list[str]:
    """ListAgents over a new TLS connection (so each call makes a new handshake)."""
    async with grpc.aio.secure_channel(tls.grpc_address, _credentials(ca, client)) as channel:
        reply = await pb_grpc.AgentServiceStub(channel).ListAgents(
            pb.ListAgentsRequest(), metadata=[("authorization", f"Bearer {tls.key}")], timeout=5
        )
    return sorted(a.name for a in reply.agents)


def _ssl(ca: bytes, client: Pem | None, folder: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.decode())
    if client is not None:
        cert, key = client.write(folder, "http-client")
        context.load_cert_chain(cert, key)
    return context


async def _http_models(tls: Tls, ca: bytes, client: Pem | None = None) -> int:
    """GET /v1/models over a new HTTPS connection; the status."""
    async with httpx2.AsyncClient(verify=_ssl(ca, client, tls.folder), timeout=5) as http:
        reply = await http.get(
            f"{tls.http_url}/v1/models", headers={"authorization": f"Bearer {tls.key}"}
        )
    return reply.status_code


async def _fails(call: object) -> bool:
    try:
        await call  # type: ignore[misc]
    except (grpc.aio.AioRpcError, httpx2.HTTPError, ssl.SSLError, OSError):
        return True
    return False


async def test_both_listeners_speak_tls_and_auth_stays_on(tmp_path: Path) -> None:
    async with tls_server(tmp_path) as tls:
        assert await _list_agents(tls, tls.ca.pem) == ["assistant", "echo"]
        assert await _http_models(tls, tls.ca.pem) == 200
        # Plaintext is refused on both.
        async with grpc.aio.insecure_channel(tls.grpc_address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.AgentServiceStub(channel).ListAgents(
                    pb.ListAgentsRequest(), timeout=2
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await _fails(
            httpx2.AsyncClient(timeout=2).get(f"http://{tls.http_url[8:]}/v1/models")
        )
        # A certificate from another CA is not trusted.
        assert await _fails(_list_agents(tls, Authority("stranger").pem))
        # TLS does not replace the key.
        async with grpc.aio.secure_channel(tls.grpc_address, _credentials(tls.ca.pem)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.AgentServiceStub(ch).ListAgents(pb.ListAgentsRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _grpcurl(tls: Tls, *extra: str) -> subprocess.CompletedProcess[str]:
    ca = tls.folder / "server-ca.crt"
    ca.write_bytes(tls.ca.pem)
    return subprocess.run(
        [GRPCURL, "-cacert", str(ca), "-H", f"authorization: Bearer {tls.key}", *extra,
         tls.grpc_address, "switchboard.v1.AgentService/ListAgents"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


async def test_grpcurl_over_tls_and_mtls(tmp_path: Path) -> None:
    async with tls_server(tmp_path / "tls") as tls:
        done = await asyncio.to_thread(_grpcurl, tls)
        assert done.returncode == 0, done.stderr
        assert {a["name"] for a in json.loads(done.stdout)["agents"]} == {"echo", "assistant"}
        plain = await asyncio.to_thread(
            subprocess.run,
            [GRPCURL, "-plaintext", "-connect-timeout", "2", tls.grpc_address, "list"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert plain.returncode != 0
    async with tls_server(tmp_path / "mtls", mutual=True) as tls:
        assert tls.client_ca is not None
        refused = await asyncio.to_thread(_grpcurl, tls, "-connect-timeout", "2")
        assert refused.returncode != 0
        cert, key = tls.client_ca.issue("ops", server=False).write(tls.folder, "ops")
        done = await asyncio.to_thread(_grpcurl, tls, "-cert", str(cert), "-key", str(key))
        assert done.returncode == 0, done.stderr
        assert "echo" in done.stdout


async def test_mtls_needs_a_client_certificate_of_the_client_ca(tmp_path: Path) -> None:
    async with tls_server(tmp_path, mutual=True) as tls:
        assert tls.client_ca is not None
        member = tls.client_ca.issue("ops", server=False)
        stranger = Authority("stranger").issue("ops", server=False)
        assert await _list_agents(tls, tls.ca.pem, member) == ["assistant", "echo"]
        assert await _http_models(tls, tls.ca.pem, member) == 200
        for client in (None, stranger):
            assert await _fails(_list_agents(tls, tls.ca.pem, client))
            assert await _fails(_http_models(tls, tls.ca.pem, client))


def _replace(path: Path, data: bytes) -> None:
    """Atomically, as a Secret volume's symlink swap is."""
    tmp = path.with_suffix(".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


async def test_a_rotated_certificate_and_client_ca_are_taken_without_a_restart(
    tmp_path: Path,
) -> None:
    async with tls_server(tmp_path, mutual=True) as tls:
        assert tls.client_ca is not None
        assert tls.app is not None
        old_client = tls.client_ca.issue("ops", server=False)
        assert await _list_agents(tls, tls.ca.pem, old_client)
        new_ca = Authority("server CA 2")
        new_server = new_ca.issue("switchboard", server=True)
        new_clients = Authority("clients CA 2")
        new_client = new_clients.issue("ops", server=False)
        _replace(tmp_path / "server.key", new_server.key)
        _replace(tmp_path / "server.crt", new_server.cert)
        _replace(tmp_path / "clients-ca.crt", new_clients.pem)
        tls_app = tls.app.tls
        assert tls_app is not None
        await wait_for(lambda: tls_app.generation >= 1, what="the TLS files re-read")
        # Both listeners: the new certificate is sent, the new client CA trusted, the old not.
        assert await _list_agents(tls, new_ca.pem, new_client) == ["assistant", "echo"]
        assert await _http_models(tls, new_ca.pem, new_client) == 200
        assert await _fails(_list_agents(tls, tls.ca.pem, old_client))
        assert await _fails(_list_agents(tls, new_ca.pem, old_client))
        assert await _fails(_http_models(tls, new_ca.pem, old_client))
        assert await _fails(_http_models(tls, tls.ca.pem, new_client))


async def test_a_broken_certificate_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    async with tls_server(tmp_path) as tls:
        assert tls.app is not None
        assert tls.app.tls is not None
        assert tls.app.metrics_port
        other = Authority("other").issue("switchboard", server=True)
        _replace(tmp_path / "server.key", other.key)  # no longer matches server.crt
        metrics = tls.app.metrics.registry
        await wait_for(
            lambda: (metrics.get_sample_value("switchboard_tls_reloads_total",
                                              {"result": "rejected"}) or 0) >= 1,
            what="the broken key rejected",
        )  # fmt: skip
        assert tls.app.tls.generation == 0
        assert await _list_agents(tls, tls.ca.pem) == ["assistant", "echo"]
        assert await _http_models(tls, tls.ca.pem) == 200
        text = await scrape(tls.app.metrics_port)
        assert sample(text, "switchboard_tls_reloads_total", result="rejected") == 1


async def test_the_health_command_probes_over_tls_and_mtls(tmp_path: Path) -> None:
    async with tls_server(tmp_path, mutual=True) as tls:
        assert tls.client_ca is not None
        ca = tls.ca.write(tmp_path, "server-ca")
        cert, key = tls.client_ca.issue("probe", server=False).write(tmp_path, "probe")
        ok = ProbeTls(ca_file=ca, cert_file=cert, key_file=key)
        assert await asyncio.to_thread(probe, tls.grpc_address, "", 5.0, ok) is None
        refused = await asyncio.to_thread(probe, tls.grpc_address, "", 5.0, ProbeTls(ca_file=ca))
        assert refused is not None
        assert refused.startswith("UNAVAILABLE")
        missing = ProbeTls(ca_file=tmp_path / "nope.crt")
        assert "nope.crt" in (
            await asyncio.to_thread(probe, tls.grpc_address, "", 5.0, missing) or ""
        )


def test_unusable_tls_files_fail_at_start_naming_the_file(tmp_path: Path) -> None:
    keys_file, _, _ = make_keys(tmp_path, [("acme", ("*",))])
    path = tmp_path / "switchboard.yaml"
    path.write_text(_config(tmp_path, keys_file, mutual=False))
    with pytest.raises(ConfigError, match=r"server\.tls\.cert_file: cannot read .*server\.crt"):
        App(load(path, {}), environ={})
    ca = Authority()
    ca.issue("a", server=True).write(tmp_path, "server")
    (tmp_path / "server.key").write_bytes(ca.issue("b", server=True).key)
    with pytest.raises(ConfigError, match="do not load together") as info:
        App(load(path, {}), environ={})
    assert "PRIVATE KEY" not in str(info.value)
