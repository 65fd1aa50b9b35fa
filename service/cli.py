"""The command line: ``switchboard serve``, ``check-config``, ``keys``, ``migrate`` and
``health``.

This module holds the parser and ``health`` only, and imports little: ``switchboard health``
runs as a container health check and a Kubernetes exec probe, every few seconds, so it must
not pay for importing the server (about 1.9 s of CPU against 0.2 s). The other commands are
in ``service.commands``, imported when one of them runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from service.serving.probe import ProbeTls, probe
from service.serving.worker import WorkerLink
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
        "--address",
        default="127.0.0.1:50051",
        help="host:port of the gRPC listener (default: 127.0.0.1:50051)",
    )
    health.add_argument(
        "--service", default="", help="a health service name (default: '', the whole server)"
    )
    health.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the answer (default: 3)"
    )
    health.add_argument(
        "--tls", action="store_true", help="speak TLS (implied by any of the options below)"
    )
    health.add_argument("--ca-file", type=Path, help="CA of the server's certificate (PEM)")
    health.add_argument("--cert-file", type=Path, help="client certificate for mTLS (PEM)")
    health.add_argument("--key-file", type=Path, help="the client certificate's key (PEM)")
    health.add_argument("--server-name", help="name to check the server's certificate for")

    keys = commands.add_parser(
        "keys",
        help="create, list, revoke and rotate API keys",
        description="Keys live in the state store the config names (as AdminService's do); "
        "with --keys-file, in that YAML file instead (read-only to the servers).",
    )
    keys.add_argument(
        "--config",
        default=config_default,
        help="its state store holds the keys, its agents are what --agent may name "
        f"(default: $SWITCHBOARD_CONFIG or {DEFAULT_CONFIG})",
    )
    keys.add_argument("--keys-file", help="edit this YAML keys file instead of the state store")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make a key and print it (once)")
    create.add_argument(
        "--tenant", required=True, help="the tenant the key's calls are counted and limited as"
    )
    create.add_argument(
        "--agent",
        action="append",
        dest="agents",
        help="an agent of the config the key may call (repeatable; default: every agent)",
    )
    create.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        default=[],
        help="a permission beyond calling agents (repeatable): admin",
    )
    create.add_argument("--note", default="", help="what the key is for")
    create.add_argument(
        "--expires-in", type=duration, help="the key expires after this (90s, 15m, 12h, 30d)"
    )
    listing = actions.add_parser("list", help="list key ids, tenants and agents (never keys)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = actions.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id", help="the key's id, as `keys list` shows it")
    rotate = actions.add_parser(
        "rotate", help="make a key like this one and let this one expire after a grace period"
    )
    rotate.add_argument("key_id", help="the key's id, as `keys list` shows it")
    rotate.add_argument(
        "--grace", type=duration, default=86400.0, help="how long the old key stays valid (24h)"
    )
    return parser


def duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``30d`` or plain seconds, as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (90s, 15m, 12h, 30d)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (must not be negative)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.command == "check-config" else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.command == "health":
        problem = probe(args.address, args.service, args.timeout, _probe_tls(args))
        if problem is not None:
            print(f"switchboard: {args.address}: {problem}", file=sys.stderr)
            return 1
        return 0
    # Imported here, not above: it loads the whole server (see the module docstring).
    from service import commands  # noqa: PLC0415

    return commands.run(args, os.environ)


def _probe_tls(args: argparse.Namespace) -> ProbeTls | None:
    wanted = (args.ca_file, args.cert_file, args.key_file, args.server_name)
    if not args.tls and all(option is None for option in wanted):
        return None
    return ProbeTls(args.ca_file, args.cert_file, args.key_file, args.server_name)
