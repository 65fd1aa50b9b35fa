"""API keys and tenancy through the real server: UNAUTHENTICATED, PERMISSION_DENIED, exempt
methods, the loopback rule, and the keys CLI."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc
from switchboard_client import (
    AsyncClient,
    PermissionDeniedError,
    UnauthenticatedError,
)

from service import cli
from service.app import App
from service.auth.keys import (
    KeyRing,
    new_key,
    parse_keys,
    read_keys_file,
    revoke,
    write_keys_file,
)
from service.config import ConfigError, load
from service.serving.wiring import AGENT_SERVICE as AGENT
from tests.chain_helpers import AGENTS, auth_config, make_keys
from tests.harness import serve_config


def test_a_key_verifies_only_as_itself() -> None:
    key, record = new_key("acme")
    ring = KeyRing([record])

    assert ring.verify(key) == record
    assert ring.verify(key + "x") is None
    assert ring.verify(key[:-1]) is None
    assert ring.verify("sb_000000000000_nope") is None
    assert ring.verify("") is None
    assert key not in repr(record)
    assert record.sha256 != key


def test_revoked_keys_are_not_in_the_ring() -> None:
    key, record = new_key("acme")
    assert KeyRing(revoke([record], record.id)).verify(key) is None
    with pytest.raises(KeyError):
        revoke(revoke([record], record.id), record.id)


def test_a_bad_keys_file_names_the_field_not_the_hash() -> None:
    text = "keys:\n- {id: abc, tenant: acme, sha256: 'secrethash'}\n"
    with pytest.raises(ValueError, match=r"keys\.0\.id") as info:
        parse_keys(text, "keys.yaml")
    assert "secrethash" not in str(info.value)


async def test_no_key_or_a_wrong_key_is_unauthenticated(tmp_path: Path) -> None:
    path, _, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path)) as served:
        with pytest.raises(UnauthenticatedError, match="missing API key"):
            await served.client.invoke("echo", "hi")
        wrong = AsyncClient(served.address, channel=served.channel, api_key="sb_x_y")
        with pytest.raises(UnauthenticatedError, match="invalid API key") as info:
            await wrong.invoke("echo", "hi")
        assert "acme" not in info.value.message
        stub = pb_grpc.AgentServiceStub(served.channel)
        with pytest.raises(grpc.aio.AioRpcError) as rpc:
            await stub.ListAgents(pb.ListAgentsRequest(), metadata=[("authorization", "Basic x")])
        assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in (rpc.value.details() or "")
        with pytest.raises(UnauthenticatedError):
            async for _ in served.client.stream("echo", "hi"):
                pass


async def test_a_valid_key_is_served_by_bearer_or_x_api_key(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path), api_key=keys[0]) as served:
        assert (await served.client.invoke("echo", "hello")).message.content[0].text == "hello"
        events = [e async for e in served.client.stream("echo", "a b")]
        assert events[-1].WhichOneof("event") == "finish"
        stub = pb_grpc.AgentServiceStub(served.channel)
        listed = await stub.ListAgents(pb.ListAgentsRequest(), metadata=[("x-api-key", keys[0])])
        assert [a.name for a in listed.agents] == ["assistant", "echo"]


async def test_a_key_reaches_only_its_agents(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("echo",))])
    async with serve_config(auth_config(path), api_key=keys[0]) as served:
        assert (await served.client.invoke("echo", "hi")).agent == "echo"
        with pytest.raises(PermissionDeniedError, match="may not call agent 'assistant'"):
            await served.client.invoke("assistant", "hi")
        with pytest.raises(PermissionDeniedError):
            async for _ in served.client.stream("assistant", "hi"):
                pass
        # An agent that does not exist is refused the same way: nothing is revealed.
        with pytest.raises(PermissionDeniedError):
            await served.client.invoke("secret-agent", "hi")
        with pytest.raises(PermissionDeniedError):
            await served.client.get_agent("assistant")
        assert [a.name for a in await served.client.list_agents()] == ["echo"]


async def test_the_tenant_comes_from_the_key_not_from_headers(tmp_path: Path) -> None:
    path, keys, records = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path)) as served:
        stub = pb_grpc.AgentServiceStub(served.channel)
        metadata = [
            ("authorization", f"Bearer {keys[0]}"),
            ("x-tenant", "globex"),
            ("tenant", "globex"),
        ]
        await stub.Invoke(
            pb.InvokeRequest(
                agent="echo",
                messages=[pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="x")])],
            ),
            metadata=metadata,
        )
        calls = served.app.metrics.calls
        assert calls.labels("grpc", AGENT, "Invoke", "echo", "acme", "OK")._value.get() == 1
        assert calls.labels("grpc", AGENT, "Invoke", "echo", "globex", "OK")._value.get() == 0
        assert records[0].tenant == "acme"


async def test_health_is_open_and_reflection_follows_config(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def reflect(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> object:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(iter([request]), metadata=metadata)
        return [r async for r in call]

    async with serve_config(auth_config(path)) as served:
        health = health_pb2_grpc.HealthStub(served.channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert await reflect(served.channel, ())

    async with serve_config(auth_config(path, reflection="auth")) as served:
        with pytest.raises(grpc.aio.AioRpcError) as rpc:
            await reflect(served.channel, ())
        assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await reflect(served.channel, (("authorization", f"Bearer {keys[0]}"),))


async def test_health_watch_streams_through_the_chain(tmp_path: Path) -> None:
    path, _, _ = make_keys(tmp_path, [("acme", ("*",))])
    async with serve_config(auth_config(path)) as served:
        watch = health_pb2_grpc.HealthStub(served.channel).Watch(
            health_pb2.HealthCheckRequest(service="switchboard.v1.AgentService")
        )
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_auth_may_be_off_only_on_loopback(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server: {host: 0.0.0.0}\nauth: {enabled: false}\n" + AGENTS)
    with pytest.raises(ConfigError, match=r"auth\.enabled: auth may be off only"):
        load(config, {})
    config.write_text("auth: {enabled: false}\n" + AGENTS)
    with pytest.raises(ConfigError, match="auth may be off"):
        load(config, {"SWITCHBOARD_SERVER__HOST": "10.0.0.1"})
    config.write_text("server: {host: '::1'}\nauth: {enabled: false}\n" + AGENTS)
    assert not load(config, {}).auth.enabled


async def test_serving_beyond_loopback_without_auth_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("auth: {enabled: false}\n" + AGENTS)
    app = App(load(config, {}))
    with pytest.raises(ConfigError, match="loopback"):
        await app.start("0.0.0.0", 0)
    await app.stop(0)
    app = App(load(config, {}))
    await app.start("127.0.0.1", 0)
    await app.stop(0)
    assert any("auth is OFF" in r.getMessage() for r in caplog.records)


async def test_keys_cli_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "switchboard.yaml"
    config.write_text("auth: {keys_file: keys.yaml}\n" + AGENTS)
    assert (
        cli.main(
            [
                "keys",
                "--config",
                str(config),
                "--keys-file",
                str(tmp_path / "keys.yaml"),
                "create",
                "--tenant",
                "acme",
            ]
        )
        == 0
    )
    key = capsys.readouterr().out.strip()
    record = read_keys_file(tmp_path / "keys.yaml")[0]
    assert key.startswith(f"sb_{record.id}_")
    assert key not in (tmp_path / "keys.yaml").read_text()

    assert (
        cli.main(
            ["keys", "--config", str(config), "--keys-file", str(tmp_path / "keys.yaml"), "list"]
        )
        == 0
    )
    listing = capsys.readouterr().out
    assert record.id in listing
    assert key not in listing

    async with serve_config(config.read_text().replace("keys.yaml", str(tmp_path / "keys.yaml")),
                            api_key=key) as served:  # fmt: skip
        assert (await served.client.invoke("echo", "hi")).agent == "echo"

    assert (
        cli.main(
            [
                "keys",
                "--config",
                str(config),
                "--keys-file",
                str(tmp_path / "keys.yaml"),
                "revoke",
                record.id,
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "keys",
                "--config",
                str(config),
                "--keys-file",
                str(tmp_path / "keys.yaml"),
                "revoke",
                record.id,
            ]
        )
        == 1
    )
    async with serve_config(config.read_text().replace("keys.yaml", str(tmp_path / "keys.yaml")),
                            api_key=key) as served:  # fmt: skip
        with pytest.raises(UnauthenticatedError):
            await served.client.invoke("echo", "hi")
    assert (
        cli.main(
            [
                "keys",
                "--config",
                str(config),
                "--keys-file",
                str(tmp_path / "keys.yaml"),
                "create",
                "--tenant",
                "no spaces",
            ]
        )
        == 2
    )


async def grpcurl(address: str, *args: str) -> tuple[int, str]:
    binary = Path(sys.executable).parent / "grpcurl"
    process = await asyncio.create_subprocess_exec(
        str(binary), "-plaintext", *args, address, "switchboard.v1.AgentService/Invoke",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode()


async def test_grpcurl_with_a_key_is_answered_and_without_one_is_refused(tmp_path: Path) -> None:
    path, keys, _ = make_keys(tmp_path, [("acme", ("*",))])
    request = '{"agent": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hi"}]}]}'
    async with serve_config(auth_config(path)) as served:
        code, out = await grpcurl(
            served.address, "-H", f"authorization: Bearer {keys[0]}", "-d", request
        )
        assert code == 0, out
        assert '"agent": "echo"' in out
        code, out = await grpcurl(served.address, "-d", request)
        assert code != 0
        assert "Unauthenticated" in out


async def test_keys_from_the_environment_and_configured_exemptions(tmp_path: Path) -> None:
    key, record = new_key("acme", agents=["echo"])
    env_file = tmp_path / "env-keys.yaml"
    write_keys_file(env_file, [record])
    config = f"""
auth:
  keys_env: SB_TEST_KEYS
  exempt_methods: ["/grpc.health.v1.Health/", "/switchboard.v1.AgentService/ListAgents"]
{AGENTS}
"""
    environ = {"SB_TEST_KEYS": env_file.read_text()}
    async with serve_config(config, environ, api_key=key) as served:
        assert (await served.client.invoke("echo", "hi")).agent == "echo"
        anonymous = AsyncClient(served.address, channel=served.channel)
        assert [a.name for a in await anonymous.list_agents()] == ["assistant", "echo"]
        with pytest.raises(UnauthenticatedError):
            await anonymous.get_agent("echo")
    with pytest.raises(ConfigError, match="SB_TEST_KEYS is not set"):
        async with serve_config(config, {}):
            pass
