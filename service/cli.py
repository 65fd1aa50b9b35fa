"""The command line: ``switchboard serve``, ``check-config`` and ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from service.config import ConfigError, Snapshot, load
from service.errors import Unavailable
from service.main import serve
from service.state import build_stores

DEFAULT_CONFIG = "config/switchboard.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the configured agents over gRPC")
    run.add_argument("--config", default=os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG))
    run.add_argument("--host", help="address to listen on (default: server.host)")
    run.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    check = commands.add_parser("check-config", help="validate a config file as serve would")
    check.add_argument("path")
    migrate = commands.add_parser(
        "migrate", help="create or migrate the state schema (SQLite or PostgreSQL), then exit"
    )
    migrate.add_argument("--config", default=os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "check-config":
            snapshot = load(args.path, os.environ)
            print(
                f"{args.path}: ok ({len(snapshot.agents)} agents, {len(snapshot.targets)} targets)"
            )
            return 0
        if args.command == "migrate":
            backend = asyncio.run(migrate(load(args.config, os.environ)))
            print(f"{args.config}: state schema is up to date ({backend})")
            return 0
        asyncio.run(serve(args.config, os.environ, host=args.host, port=args.port))
    except ConfigError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(f"switchboard: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


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
