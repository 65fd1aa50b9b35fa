"""Start the real server in-process (same wiring as production) on a free loopback port."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import grpc
import yaml
from opentelemetry.sdk.trace import TracerProvider
from switchboard_client import AsyncClient

from service.app import App
from service.config import load


@dataclass
class Served:
    app: App
    path: Path  # the config file served: edit it to reload
    address: str
    channel: grpc.aio.Channel
    client: AsyncClient
    http_url: str = ""  # http://127.0.0.1:<port> when served with ``http=True``


def for_tests(yaml_text: str) -> str:
    """The config as tests serve it: auth off unless the config sets ``auth`` (tests run on
    loopback), a metrics port, if any, replaced by a free one, and lost budget counters
    rebuilt in 0.05 s unless the config says (a fresh Redis has no epoch either: its first
    budgeted call would wait a whole ``state.budget_rebuild_s``)."""
    raw = yaml.safe_load(textwrap.dedent(yaml_text))
    raw.setdefault("auth", {"enabled": False})
    if raw.get("state") is not None:
        raw["state"].setdefault("budget_rebuild_s", 0.05)
    http = raw.get("server", {}).get("http", {})
    if http.get("port") is not None:
        http["port"] = 0
    metrics = raw.get("observability", {}).get("metrics", {})
    if metrics.get("port") is not None:
        metrics["port"] = 0
    return yaml.safe_dump(raw)


@contextlib.asynccontextmanager
async def serve_config(
    yaml_text: str,
    environ: Mapping[str, str] | None = None,
    *,
    grace_s: float = 1.0,
    api_key: str | None = None,
    tracer_provider: TracerProvider | None = None,
    files: Mapping[str, str] | None = None,
    http: bool = False,
) -> AsyncIterator[Served]:
    """Load ``yaml_text`` as a config file and serve it on 127.0.0.1:<free port>.

    ``files`` are written beside the config (e.g. a keys file); the client sends ``api_key``.
    ``http``: also serve the HTTP doors, on a free port (``Served.http_url``).
    """
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "switchboard.yaml"
        path.write_text(for_tests(yaml_text))
        for name, text in (files or {}).items():
            (Path(tmp) / name).write_text(text)
        # State goes to this temporary folder unless the test says where.
        environ = {"SWITCHBOARD_STATE__DATA_DIR": str(Path(tmp) / "data"), **(environ or {})}
        app = App(load(path, environ), tracer_provider=tracer_provider, environ=environ)
        port = await app.start("127.0.0.1", 0, http_port=0 if http else None)
        address = f"127.0.0.1:{port}"
        http_url = f"http://127.0.0.1:{app.http_port}" if app.http_port is not None else ""
        channel = grpc.aio.insecure_channel(address)
        client = AsyncClient(address, channel=channel, api_key=api_key)
        try:
            yield Served(app, path, address, channel, client, http_url)
        finally:
            await channel.close(grace=None)
            await app.stop(grace_s)
