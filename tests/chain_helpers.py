"""Shared bits for the interceptor-chain tests: configs with keys, a metrics scraper."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from service.auth.keys import ApiKey, new_key, write_keys_file

AGENTS = """
targets:
  mock-echo: {provider: mock, model: echo}
agents:
  echo: {route: [mock-echo]}
  assistant: {route: [mock-echo]}
"""


def make_keys(
    folder: Path, specs: Iterable[tuple[str, tuple[str, ...]]]
) -> tuple[Path, list[str], list[ApiKey]]:
    """Write a keys file with one key per (tenant, agents); return it, the keys, the records."""
    keys, records = [], []
    for tenant, agents in specs:
        key, record = new_key(tenant, agents=agents)
        keys.append(key)
        records.append(record)
    path = folder / "keys.yaml"
    write_keys_file(path, records)
    return path, keys, records


def auth_config(keys_file: Path, extra: str = "", *, reflection: str = "open") -> str:
    return f"""
auth:
  enabled: true
  keys_file: {keys_file}
  reflection: {reflection}
{extra}
{AGENTS}
"""


async def scrape(port: int) -> str:
    """GET /metrics over HTTP, as Prometheus would."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return r.read().decode()

    return await asyncio.to_thread(get)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels...}`` in an exposition text, if present."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        got = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if "=" in part)
        got = {k: v.strip('"') for k, v in got.items()}
        if all(got.get(k) == v for k, v in labels.items()):
            return float(value)
    return None
