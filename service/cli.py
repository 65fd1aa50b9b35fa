"""The command line: ``switchboard serve``, ``check-config`` and ``health``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from service.app import App
from service.config import ConfigError, Snapshot, load
from service.errors import SwitchboardError
from service.main import serve
from service.serving.probe import probe
from service.serving.supervisor import Supervisor
from service.serving.worker import WorkerLink

DEFAULT_CONFIG = "config/switchboard.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the configured agents over gRPC")
    run.add_argument("--config", default=os.environ.get("SWITCHBOARD_CONFIG", DEFAULT_CONFIG))
    run.add_argument("--host", help="address to listen on (default: server.host)")
    run.add_argument("--port", type=int, help="port to listen on (default: server.port)")
    run.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (default: workers.count, normally 1)",
    )
    run.add_argument("--port-file", help="write the bound port here once serving")
    run.add_argument("--worker-fds", type=WorkerLink.parse, help=argparse.SUPPRESS)
    check = commands.add_parser("check-config", help="validate a config file as serve would")
    check.add_argument("path")
    health = commands.add_parser("health", help="exit 0 when a server reports SERVING")
    health.add_argument("--address", default="127.0.0.1:50051")
    health.add_argument("--service", default="", help="a service name; '' is the server")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds")
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
    except (ConfigError, SwitchboardError) as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _supervise(args: argparse.Namespace, workers: int) -> int:
    async def run() -> int:
        snapshot = await check_config(args.config, os.environ)  # fail here, not in N workers
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
