"""Keys as a service through the real server: AdminService over gRPC (create, get, list,
revoke, rotate, expiry, scopes), the read-only keys file beside the store, the cross-tenant
reports, and the ``switchboard keys`` command running the same code."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from switchboard.v1 import admin_pb2 as pb
from switchboard.v1 import admin_pb2_grpc as pb_grpc
from switchboard.v1 import usage_pb2
from switchboard_client import AsyncClient, PermissionDeniedError, UnauthenticatedError

from service import cli
from service.auth.keys import new_key, write_keys_file
from tests.chain_helpers import AGENTS
from tests.harness import Served, serve_config
from tests.waiting import wait_for


def _config(keys_file: Path, extra: str = "") -> str:
    return f"auth: {{enabled: true, keys_file: {keys_file}}}\n{extra}\n{AGENTS}"


def _files(tmp_path: Path) -> tuple[Path, str, str, str]:
    """A keys file with an admin key (tenant ops) and a plain key (tenant acme)."""
    admin_key, admin = new_key("ops", scopes=["admin"])
    plain_key, plain = new_key("acme", agents=["echo"])
    path = tmp_path / "keys.yaml"
    write_keys_file(path, [admin, plain])
    return path, admin_key, plain_key, plain.id


def _stub(served: Served) -> pb_grpc.AdminServiceStub:
    return pb_grpc.AdminServiceStub(served.channel)


def _auth(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


async def _code(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _client(served: Served, key: str) -> AsyncClient:
    return AsyncClient(served.address, channel=served.channel, api_key=key)


async def test_an_admin_key_manages_keys_and_others_are_refused(tmp_path: Path) -> None:
    path, admin_key, plain_key, _ = _files(tmp_path)
    async with serve_config(_config(path)) as served:
        admin = _stub(served)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin.ListKeys(pb.ListKeysRequest(), metadata=_auth(plain_key))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'admin' scope" in (info.value.details() or "")
        assert await _code(admin.ListKeys(pb.ListKeysRequest())) == grpc.StatusCode.UNAUTHENTICATED

        made = await admin.CreateKey(
            pb.CreateKeyRequest(tenant="globex", agents=["echo"], note="billing job"),
            metadata=_auth(admin_key),
        )
        assert made.secret.startswith(f"sb_{made.key.key_id}_")
        assert made.key.source == pb.KEY_SOURCE_STORE
        assert made.key.state == pb.KEY_STATE_ACTIVE
        assert list(made.key.agents) == ["echo"]
        # Accepted at once on this replica, for its agents only.
        client = _client(served, made.secret)
        assert (await client.invoke("echo", "hi")).agent == "echo"
        with pytest.raises(PermissionDeniedError):
            await client.invoke("assistant", "hi")
        assert await _code(admin.ListKeys(pb.ListKeysRequest(), metadata=_auth(made.secret))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )

        got = await admin.GetKey(
            pb.GetKeyRequest(key_id=made.key.key_id), metadata=_auth(admin_key)
        )
        assert got.key.note == "billing job"
        assert made.secret not in str(got)
        listed = await admin.ListKeys(pb.ListKeysRequest(), metadata=_auth(admin_key))
        sources = {k.tenant: k.source for k in listed.keys}
        assert sources == {"ops": pb.KEY_SOURCE_FILE, "acme": pb.KEY_SOURCE_FILE,
                           "globex": pb.KEY_SOURCE_STORE}  # fmt: skip
        only = await admin.ListKeys(pb.ListKeysRequest(tenant="globex"), metadata=_auth(admin_key))
        assert [k.key_id for k in only.keys] == [made.key.key_id]

        revoked = await admin.RevokeKey(
            pb.RevokeKeyRequest(key_id=made.key.key_id), metadata=_auth(admin_key)
        )
        assert revoked.key.state == pb.KEY_STATE_REVOKED
        with pytest.raises(UnauthenticatedError):
            await client.invoke("echo", "hi")
        hidden = await admin.ListKeys(
            pb.ListKeysRequest(tenant="globex"), metadata=_auth(admin_key)
        )
        assert list(hidden.keys) == []
        shown = await admin.ListKeys(
            pb.ListKeysRequest(tenant="globex", show_revoked=True), metadata=_auth(admin_key)
        )
        assert [k.state for k in shown.keys] == [pb.KEY_STATE_REVOKED]
        # Every change is audited under the key's tenant.
        audit = await served.app.stores.durable.recent_audit("globex", 10)
        actions = [e.action for e in audit if e.action.startswith("key.")]
        assert actions == ["key.revoke", "key.create"]
        assert all(e.resource == f"api_key:{made.key.key_id}" for e in audit[:1])


async def test_bad_requests_name_the_field(tmp_path: Path) -> None:
    path, admin_key, _, file_key_id = _files(tmp_path)
    async with serve_config(_config(path)) as served:
        admin = _stub(served)
        meta = _auth(admin_key)
        for request, field in [
            (pb.CreateKeyRequest(tenant="no spaces"), "tenant"),
            (pb.CreateKeyRequest(tenant="acme", agents=["nope"]), "agents[0]"),
            (pb.CreateKeyRequest(tenant="acme", scopes=["root"]), "scopes"),
            (pb.CreateKeyRequest(tenant="acme", expire_time=timestamp_pb2.Timestamp(seconds=5)),
             "expire_time"),
        ]:  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await admin.CreateKey(request, metadata=meta)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith(field)
        for call in (
            admin.GetKey(pb.GetKeyRequest(key_id="000000000000"), metadata=meta),
            admin.RevokeKey(pb.RevokeKeyRequest(key_id="000000000000"), metadata=meta),
            admin.RotateKey(pb.RotateKeyRequest(key_id="000000000000"), metadata=meta),
        ):
            assert await _code(call) == grpc.StatusCode.NOT_FOUND
        # The keys file is read-only here.
        for call in (
            admin.RevokeKey(pb.RevokeKeyRequest(key_id=file_key_id), metadata=meta),
            admin.RotateKey(pb.RotateKeyRequest(key_id=file_key_id), metadata=meta),
        ):
            assert await _code(call) == grpc.StatusCode.FAILED_PRECONDITION
        too_long = duration_pb2.Duration(seconds=31 * 86400)
        made = await admin.CreateKey(pb.CreateKeyRequest(tenant="acme"), metadata=meta)
        assert await _code(admin.RotateKey(
            pb.RotateKeyRequest(key_id=made.key.key_id, grace_period=too_long), metadata=meta
        )) == grpc.StatusCode.INVALID_ARGUMENT  # fmt: skip
        assert await _code(admin.ListKeys(pb.ListKeysRequest(page_size=-1), metadata=meta)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )


async def test_rotation_keeps_the_old_key_for_the_grace_period(tmp_path: Path) -> None:
    path, admin_key, _, _ = _files(tmp_path)
    async with serve_config(_config(path)) as served:
        admin, meta = _stub(served), _auth(admin_key)
        first = await admin.CreateKey(
            pb.CreateKeyRequest(tenant="acme", agents=["echo"], scopes=["admin"]), metadata=meta
        )
        before = time.time()
        rotated = await admin.RotateKey(
            pb.RotateKeyRequest(key_id=first.key.key_id,
                                grace_period=duration_pb2.Duration(seconds=3600)),
            metadata=meta,
        )  # fmt: skip
        assert rotated.key.rotated_from == first.key.key_id
        assert list(rotated.key.agents) == ["echo"]
        assert list(rotated.key.scopes) == ["admin"]
        expiry = rotated.previous_key.expire_time.seconds
        assert before + 3600 - 2 <= expiry <= time.time() + 3600 + 1
        for secret in (first.secret, rotated.secret):
            assert (await _client(served, secret).invoke("echo", "hi")).agent == "echo"
        # A grace of zero ends the old key at once.
        again = await admin.RotateKey(
            pb.RotateKeyRequest(key_id=rotated.key.key_id, grace_period=duration_pb2.Duration()),
            metadata=meta,
        )
        with pytest.raises(UnauthenticatedError):
            await _client(served, rotated.secret).invoke("echo", "hi")
        assert (await _client(served, again.secret).invoke("echo", "hi")).agent == "echo"
        assert again.previous_key.state == pb.KEY_STATE_EXPIRED
        assert (
            await _code(
                admin.RotateKey(pb.RotateKeyRequest(key_id=rotated.key.key_id), metadata=meta)
            )
            == grpc.StatusCode.FAILED_PRECONDITION
        )


async def test_an_expired_key_is_refused(tmp_path: Path) -> None:
    path, admin_key, _, _ = _files(tmp_path)
    async with serve_config(_config(path)) as served:
        soon = time.time() + 1.0
        made = await _stub(served).CreateKey(
            pb.CreateKeyRequest(
                tenant="acme", expire_time=timestamp_pb2.Timestamp(seconds=int(soon) + 1)
            ),
            metadata=_auth(admin_key),
        )
        client = _client(served, made.secret)
        assert (await client.invoke("echo", "hi")).agent == "echo"

        async def expired() -> bool:
            try:
                await client.invoke("echo", "hi")
            except UnauthenticatedError:
                return True
            return False

        deadline = time.monotonic() + 10
        while not await expired():
            assert time.monotonic() < deadline, "the key never expired"
        assert time.time() >= int(soon) + 1


async def test_reports_across_tenants_and_recent_calls_carry_no_prompt(tmp_path: Path) -> None:
    path, admin_key, plain_key, _ = _files(tmp_path)
    async with serve_config(_config(path)) as served:
        await _client(served, plain_key).invoke("echo", "the secret plan")
        await _client(served, admin_key).invoke("assistant", "another prompt")
        with pytest.raises(PermissionDeniedError):
            await _client(served, plain_key).invoke("assistant", "not allowed")
        admin, meta = _stub(served), _auth(admin_key)
        await wait_for(lambda: served.app.pipeline.recorder.in_flight == 0, what="ledger")
        report = await admin.GetUsageReport(
            pb.GetUsageReportRequest(
                group_by=[usage_pb2.USAGE_DIMENSION_TENANT, usage_pb2.USAGE_DIMENSION_AGENT],
                interval=duration_pb2.Duration(seconds=3600),
            ),
            metadata=meta,
        )
        got = {(r.tenant, r.usage.agent): r.usage.calls for r in report.rows}
        assert got[("acme", "echo")] == 1
        assert got[("ops", "assistant")] == 1
        calls = await admin.ListRecentCalls(pb.ListRecentCallsRequest(), metadata=meta)
        assert {c.tenant for c in calls.calls} >= {"acme", "ops"}
        assert "secret plan" not in str(calls)
        assert "another prompt" not in str(calls)
        bad = pb.GetUsageReportRequest(interval=duration_pb2.Duration(seconds=1))
        assert await _code(admin.GetUsageReport(bad, metadata=meta)) == (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        targets = await admin.ListTargets(pb.ListTargetsRequest(), metadata=meta)
        assert [(t.name, t.breaker_state) for t in targets.targets] == [
            ("mock-echo", pb.BREAKER_STATE_CLOSED)
        ]


async def test_the_keys_command_uses_the_store_and_checks_agents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "switchboard.yaml"
    config.write_text(
        f"state: {{data_dir: {tmp_path / 'data'}}}\nauth: {{enabled: true}}\n{AGENTS}"
    )
    base = ["keys", "--config", str(config)]
    assert (
        await asyncio.to_thread(cli.main, [*base, "create", "--tenant", "acme", "--agent", "nope"])
        == 2
    )
    assert "no agent named 'nope'" in capsys.readouterr().err
    assert (
        await asyncio.to_thread(cli.main, [*base, "create", "--tenant", "acme", "--agent", "echo"])
        == 0
    )
    key = capsys.readouterr().out.strip()
    key_id = key.split("_")[1]
    assert await asyncio.to_thread(cli.main, [*base, "list"]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing
    assert key not in listing
    data = {"SWITCHBOARD_STATE__DATA_DIR": str(tmp_path / "data")}
    async with serve_config(config.read_text(), data) as served:
        assert (await _client(served, key).invoke("echo", "hi")).agent == "echo"
        # Revoked from the command line while the server runs: refused within a second.
        assert await asyncio.to_thread(cli.main, [*base, "revoke", key_id]) == 0
        started = time.monotonic()
        client = _client(served, key)
        while True:
            try:
                await client.invoke("echo", "hi")
            except UnauthenticatedError:
                break
            assert time.monotonic() - started < 1.0, "revocation not taken within a second"
    assert await asyncio.to_thread(cli.main, [*base, "revoke", "000000000000"]) == 1
    # The keys file mode checks --agent against the config too.
    keys_file = str(tmp_path / "k.yaml")
    assert (
        await asyncio.to_thread(
            cli.main, [*base, "--keys-file", keys_file, "create", "--tenant", "a", "--agent", "x"]
        )
        == 2
    )
    assert (
        await asyncio.to_thread(
            cli.main,
            [*base, "--keys-file", keys_file, "create", "--tenant", "a", "--agent", "echo"],
        )
        == 0
    )
    # ... and everything else AdminService checks (one key_violations): a note past its limit
    # was once written to the keys file.
    long_note = [*base, "--keys-file", keys_file, "create", "--tenant", "a", "--note", "x" * 300]
    assert await asyncio.to_thread(cli.main, long_note) == 2


async def test_a_keys_file_entry_past_its_expires_at_is_refused(tmp_path: Path) -> None:
    live_key, live = new_key("acme")
    old_key, old = new_key("acme")
    path = tmp_path / "keys.yaml"
    write_keys_file(path, [live, replace(old, expires_at=time.time() - 1)])
    assert "expires_at" in path.read_text()
    async with serve_config(_config(path)) as served:
        assert (await _client(served, live_key).invoke("echo", "hi")).agent == "echo"
        with pytest.raises(UnauthenticatedError):
            await _client(served, old_key).invoke("echo", "hi")
