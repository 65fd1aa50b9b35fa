"""The commands that run the server or read its config: ``serve``, ``check-config``, ``keys``
and ``migrate``. ``service.cli`` parses the command line and imports this module only for
them (``health`` must start fast)."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from service.app import App
from service.auth import keys as api_keys
from service.auth.admin import Actor, KeyAdmin, key_violations
from service.config import ConfigError, Snapshot, load
from service.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SwitchboardError,
    Unavailable,
)
from service.main import serve
from service.observability.logging import configure
from service.serving.loop import loop_factory
from service.serving.supervisor import Supervisor
from service.state import build_stores


async def check_config(path: str, environ: Mapping[str, str]) -> Snapshot:
    """Validate ``path`` exactly as ``serve`` would: the same ``load``, then
    :func:`check_snapshot`.

    Raises:
        ConfigError: the file is invalid.
        SwitchboardError: a target cannot be built (its provider is not available, say).
    """
    snapshot = load(path, environ)
    await check_snapshot(snapshot, environ)
    return snapshot


async def check_snapshot(snapshot: Snapshot, environ: Mapping[str, str]) -> None:
    """Have the composition root build every provider and the server from ``snapshot``, as
    ``serve`` would (nothing is bound or called), then close what it built.

    Raises:
        ConfigError: the snapshot cannot be served.
        SwitchboardError: a target cannot be built (its provider is not available, say).
    """
    app = App(snapshot, environ=environ)
    await app.stop(0)


def _config_agents(args: argparse.Namespace) -> list[str]:
    """The agents of ``--config``, to check ``--agent`` against.

    Raises:
        ConfigError: the config cannot be read.
    """
    try:
        raw = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{args.config}: cannot read the config to check --agent against ({exc}); pass --config"
        ) from exc
    return list((raw.get("agents") or {}) if isinstance(raw, dict) else {})


def _describe(r: api_keys.ApiKey, now: float) -> str:
    agents = ",".join(sorted(r.agents)) if r.agents is not None else "*"
    if r.revoked_at is not None:
        status = f"revoked {api_keys.iso(r.revoked_at)}"
    elif not r.active(now):
        status = f"expired {api_keys.iso(r.expires_at or 0)}"
    else:
        status = f"active since {api_keys.iso(r.created_at)}"
        if r.expires_at is not None:
            status += f", expires {api_keys.iso(r.expires_at)}"
    scopes = ",".join(sorted(r.scopes)) or "-"
    return f"{r.id}  {r.tenant:16}  {r.source:5}  {agents:16}  {scopes:6}  {status}"


_HEADER = "id            tenant            from   agents            scopes  status"


def _print_created(key: str, record: api_keys.ApiKey, where: str) -> None:
    print(f"created key {record.id} for tenant {record.tenant} in {where}", file=sys.stderr)
    print("store it now: it is not kept and cannot be shown again", file=sys.stderr)
    print(key)


def _write(path: Path, records: list[api_keys.ApiKey]) -> None:
    try:
        api_keys.write_keys_file(path, records)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write keys file: {exc.strerror}") from exc


def keys_file_command(args: argparse.Namespace) -> int:
    """``switchboard keys --keys-file F ...``: the YAML file, as GitOps keeps it."""
    path = Path(args.keys_file)
    try:
        records = api_keys.read_keys_file(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.action == "create":
        now = time.time()
        _check_create(args, _config_agents(args) if args.agents else [], now)
        key, record = api_keys.new_key(
            args.tenant,
            agents=args.agents or [api_keys.ANY_AGENT],
            scopes=args.scopes,
            note=args.note,
            now=now,
            expires_at=None if args.expires_in is None else now + args.expires_in,
        )
        _write(path, [*records, record])
        _print_created(key, record, str(path))
        return 0
    if args.action == "list":
        print(_HEADER)
        for r in records:
            if (args.all or r.revoked_at is None) and args.tenant in (None, r.tenant):
                print(_describe(r, time.time()))
        return 0
    if args.action == "rotate":
        print("switchboard: rotate works on the state store's keys (drop --keys-file)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        updated = api_keys.revoke(records, args.key_id)
    except KeyError:
        print(f"switchboard: no active key with id {args.key_id!r} in {path}", file=sys.stderr)
        return 1
    _write(path, updated)
    print(f"revoked {args.key_id} (servers pick it up when they load the config)")
    return 0


def _check_create(args: argparse.Namespace, agents: list[str], now: float) -> None:
    """Raises ConfigError: the first thing :func:`key_violations` finds (AdminService's check,
    said with the command line's names)."""
    expires_at = None if args.expires_in is None else now + args.expires_in
    found = key_violations(
        args.tenant, args.agents or (), args.scopes, args.note, known_agents=agents,
        expires_at=expires_at, now=now,
    )  # fmt: skip
    if found:
        raise ConfigError(_flag_names(f"{found[0].field}: {found[0].description}"))


_FLAGS = {"agents[": "--agent[", "scopes:": "--scope:", "expire_time:": "--expires-in:",
          "tenant:": "--tenant:", "note:": "--note:"}  # fmt: skip


def _flag_names(message: str) -> str:
    """A key check's message with the command line's names for the fields."""
    for field, flag in _FLAGS.items():
        if message.startswith(field):
            return flag + message.removeprefix(field)
    return message


async def keys_store_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``switchboard keys ...``: the state store, through the code AdminService runs."""
    snapshot = load(args.config, environ)
    stores = build_stores(snapshot)
    try:
        if snapshot.state.migrate:
            await stores.durable.migrate()
        admin = KeyAdmin(
            stores.admin,
            agents=lambda: list(snapshot.agents),
            read_only_keys=lambda: snapshot.auth.keys.every,
            audit=stores.durable.audit,
        )
        actor = Actor(key_id="cli")
        try:
            return await _keys_action(args, admin, actor)
        except InvalidArgument as exc:
            raise ConfigError(_flag_names(exc.message)) from None
        except (NotFound, FailedPrecondition) as exc:
            print(f"switchboard: {exc.message}", file=sys.stderr)
            return 1
    finally:
        await stores.aclose()


async def _keys_action(args: argparse.Namespace, admin: KeyAdmin, actor: Actor) -> int:
    now = time.time()
    where = f"the state store of {args.config}"
    if args.action == "create":
        key, record = await admin.create(
            actor,
            args.tenant,
            agents=args.agents or (),
            scopes=args.scopes,
            note=args.note,
            expires_at=None if args.expires_in is None else now + args.expires_in,
        )
        _print_created(key, record, where)
        return 0
    if args.action == "list":
        print(_HEADER)
        after = ""
        while page := await admin.list(args.tenant, after, 500, include_revoked=args.all):
            for r in page:
                print(_describe(r, now))
            after = page[-1].id
        return 0
    if args.action == "revoke":
        record = await admin.revoke(actor, args.key_id)
        print(f"revoked {record.id} (every server stops accepting it within a second)")
        return 0
    key, new, old = await admin.rotate(actor, args.key_id, args.grace)
    _print_created(key, new, where)
    print(f"{old.id} stays valid until {api_keys.iso(old.expires_at or now)}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the command ``args`` names (any but ``health``), with overrides and secrets from
    ``environ``; returns the exit status: 0 done, 1 a store or server is unavailable or a
    key is not found, 2 a bad config or argument. The config is loaded once."""
    try:
        if args.command == "check-config":
            snapshot = asyncio.run(check_config(args.path, environ))
            counts = {
                "agent": len(snapshot.agents),
                "workflow": len(snapshot.workflows),
                "target": len(snapshot.targets),
            }
            listed = ", ".join(f"{n} {kind}{'s' * (n != 1)}" for kind, n in counts.items())
            print(f"{args.path}: ok ({listed})")
            return 0
        if args.command == "keys" and args.keys_file:
            return keys_file_command(args)
        if args.command == "keys":
            return asyncio.run(keys_store_command(args, environ))
        if args.command == "migrate":
            backend = asyncio.run(migrate(load(args.config, environ)))
            print(f"{args.config}: state schema is up to date ({backend})")
            return 0
        config = load(args.config, environ)
        if args.worker_fds is None:
            workers = args.workers or config.workers.count
            if workers > 1:
                return _supervise(args, config, environ, workers)
        with asyncio.Runner(loop_factory=loop_factory(config.server.event_loop)) as runner:
            runner.run(
                serve(
                    config,
                    environ,
                    host=args.host,
                    port=args.port,
                    port_file=args.port_file,
                    worker=args.worker_fds,
                )
            )
    except Unavailable as exc:
        print(f"switchboard: {exc.message}", file=sys.stderr)
        return 1
    except (ConfigError, SwitchboardError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _supervise(
    args: argparse.Namespace, snapshot: Snapshot, environ: Mapping[str, str], workers: int
) -> int:
    async def run() -> int:
        await check_snapshot(snapshot, environ)  # fail here, not in N workers
        configure(snapshot.observability.logs)
        supervisor = Supervisor(
            snapshot,
            environ,
            workers=workers,
            host=args.host,
            port=args.port,
            port_file=args.port_file,
        )
        return await supervisor.run()

    return asyncio.run(run())


async def migrate(snapshot: Snapshot) -> str:
    """Create or migrate the durable schema of ``snapshot.state``; returns the backend name.

    Raises:
        Unavailable: the store cannot be reached.
    """
    stores = build_stores(snapshot)
    try:
        await stores.durable.migrate()
    finally:
        await stores.aclose()
    return stores.backend
