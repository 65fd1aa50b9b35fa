"""Start the real server in-process (same wiring as production) on a free loopback port."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import grpc
from switchboard_client import AsyncClient

from service.app import App
from service.config import load


@dataclass
class Served:
    app: App
    address: str
    channel: grpc.aio.Channel
    client: AsyncClient


@contextlib.asynccontextmanager
async def serve_config(
    yaml_text: str, environ: Mapping[str, str] | None = None, *, grace_s: float = 1.0
) -> AsyncIterator[Served]:
    """Load ``yaml_text`` as a config file and serve it on 127.0.0.1:<free port>."""
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "switchboard.yaml"
        path.write_text(textwrap.dedent(yaml_text))
        # State goes to this temporary folder unless the test says where.
        environ = {"SWITCHBOARD_STATE__DATA_DIR": str(Path(tmp) / "data"), **(environ or {})}
        app = App(load(path, environ))
        port = await app.start("127.0.0.1", 0)
        address = f"127.0.0.1:{port}"
        channel = grpc.aio.insecure_channel(address)
        client = AsyncClient(address, channel=channel)
        try:
            yield Served(app, address, channel, client)
        finally:
            await channel.close(grace=None)
            await app.stop(grace_s)
