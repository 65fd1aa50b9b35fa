"""The command line: ``switchboard serve``, ``check-config``, ``keys``, ``migrate`` and
``health``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from service.app import App
from service.auth import keys as api_keys
from service.auth.policy import keys_path
from service.config import ConfigError, Snapshot, load
from service.config.chain_model import AuthConfig
from service.errors import SwitchboardError, Unavailable
from service.main import serve
from service.observability.logging import configure
from service.serving.probe import probe
from service.serving.supervisor import Supervisor
from service.serving.worker import WorkerLink
from service.state import build_stores
from service.version import package_version

DEFAULT_CONFIG = "config/switchboard.yaml"


EPILOG = """\
Every config setting can be overridden from the environment: SWITCHBOARD_<SECTION>__<KEY>,
e.g. SWITCHBOARD_SERVER__HTTP__PORT=6080 or SWITCHBOARD_OBSERVABILITY__METRICS__PORT=6464.
Tracing also honours the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, ...).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchboard",
        description="Switchboard: a gRPC-native gateway that serves LLM agents.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {package_version()}",
        help="print the version",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_default = os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG)
    config_help = f"the config file (default: $SWITCHBOARD_CONFIG or {DEFAULT_CONFIG})"
    run = commands.add_parser(
        "serve",
        help="serve the configured agents (gRPC, HTTP doors, metrics)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", default=config_default, help=config_help)
    run.add_argument("--host", help="address to listen on (default: server.host)")
    run.add_argument("--port", type=int, help="gRPC port to listen on (default: server.port)")
    run.add_argument("--port-file", metavar="PATH", help="write the bound port here once serving")
    run.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (default: workers.count, normally 1)",
    )
    run.add_argument("--worker-fds", type=WorkerLink.parse, help=argparse.SUPPRESS)
    check = commands.add_parser("check-config", help="validate a config file as serve would")
    check.add_argument("path", help="the config file (environment overrides apply)")
    migrate = commands.add_parser(
        "migrate", help="create or migrate the state schema (SQLite or PostgreSQL), then exit"
    )
    migrate.add_argument("--config", default=config_default, help=config_help)
    health = commands.add_parser("health", help="exit 0 when a server reports SERVING")
    health.add_argument(
        "--address", default="127.0.0.1:50051", help="host:port of the gRPC listener"
    )
    health.add_argument(
        "--service", default="", help="a health service name (default: '', the whole server)"
    )
    health.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the answer (default: 3)"
    )

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    where = keys.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        default=config_default,
        help=f"use this config's auth.keys_file (default: $SWITCHBOARD_CONFIG or {DEFAULT_CONFIG})",
    )
    where.add_argument("--keys-file", help="the keys file (default: the config's)")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key and print it (once)")
    create.add_argument(
        "--tenant", required=True, help="the tenant the key's calls are counted and limited as"
    )
    create.add_argument(
        "--agent",
        action="append",
        dest="agents",
        help="an agent the key may call (repeatable; default: every agent)",
    )
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        default=[],
        help="a permission beyond calling agents (repeatable)",
    )
    create.add_argument("--note", default="", help="what the key is for")
    actions.add_parser("list", help="list key ids, tenants and agents (never keys)")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", help="the key's id, as `keys list` shows it")
    return parser


async def check_config(path: str, environ: Mapping[str, str]) -> Snapshot:
    """Validate ``path`` exactly as ``serve`` would: the same ``load``, then the same
    composition root builds every provider and the server (nothing is bound or called).

    Raises:
        ConfigError: the file is invalid.
        SwitchboardError: a target cannot be built (its provider is not available, say).
    """
    snapshot = load(path, environ)
    app = App(snapshot, environ=environ)
    await app.stop(0)
    return snapshot


def _keys_file(args: argparse.Namespace) -> Path:
    """The keys file named on the command line or in the config.

    Raises:
        ConfigError: neither names one.
    """
    if args.keys_file:
        return Path(args.keys_file)
    config = Path(args.config)
    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        auth = AuthConfig.model_validate(raw.get("auth") or {})
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"{config}: cannot read auth.keys_file: {exc}") from exc
    path = keys_path(auth, config.parent)
    if path is None:
        raise ConfigError(f"{config}: auth.keys_file is not set; pass --keys-file")
    return path


def _write(path: Path, records: list[api_keys.ApiKey]) -> None:
    try:
        api_keys.write_keys_file(path, records)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write keys file: {exc.strerror}") from exc


def keys_command(args: argparse.Namespace) -> int:
    path = _keys_file(args)
    try:
        records = api_keys.read_keys_file(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if args.action == "create":
        if not api_keys.TENANT_PATTERN.match(args.tenant):
            raise ConfigError(
                f"--tenant {args.tenant!r}: letters, digits, '_', '-', '.' (at most 64)"
            )
        key, record = api_keys.new_key(
            args.tenant,
            agents=args.agents or [api_keys.ANY_AGENT],
            scopes=args.scopes,
            note=args.note,
        )
        _write(path, [*records, record])
        print(f"created key {record.id} for tenant {record.tenant} in {path}", file=sys.stderr)
        print("store it now: it is not kept and cannot be shown again", file=sys.stderr)
        print(key)
        return 0
    if args.action == "list":
        print("id            tenant            agents  status")
        for r in records:
            agents = ",".join(sorted(r.agents)) if r.agents is not None else "*"
            status = f"revoked {r.revoked_at}" if r.revoked_at else f"active since {r.created_at}"
            print(f"{r.id}  {r.tenant:16}  {agents}  {status}")
        return 0
    try:
        updated = api_keys.revoke(records, args.key_id)
    except KeyError:
        print(f"switchboard: no active key with id {args.key_id!r} in {path}", file=sys.stderr)
        return 1
    _write(path, updated)
    print(f"revoked {args.key_id} (servers pick it up when they load the config)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.command == "check-config" else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        if args.command == "health":
            problem = probe(args.address, args.service, args.timeout)
            if problem is not None:
                print(f"switchboard: {args.address}: {problem}", file=sys.stderr)
                return 1
            return 0
        if args.command == "check-config":
            snapshot = asyncio.run(check_config(args.path, os.environ))
            print(
                f"{args.path}: ok ({len(snapshot.agents)} agents, {len(snapshot.targets)} targets)"
            )
            return 0
        if args.command == "keys":
            return keys_command(args)
        if args.command == "migrate":
            backend = asyncio.run(migrate(load(args.config, os.environ)))
            print(f"{args.config}: state schema is up to date ({backend})")
            return 0
        if args.worker_fds is None:
            workers = args.workers or load(args.config, os.environ).workers.count
            if workers > 1:
                return _supervise(args, workers)
        asyncio.run(
            serve(
                args.config,
                os.environ,
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


def _supervise(args: argparse.Namespace, workers: int) -> int:
    async def run() -> int:
        snapshot = await check_config(args.config, os.environ)  # fail here, not in N workers
        configure(snapshot.observability.logs)
        supervisor = Supervisor(
            snapshot,
            os.environ,
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
