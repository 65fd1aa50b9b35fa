"""`switchboard migrate`: creates the schema, is idempotent, reports a down store."""

from __future__ import annotations

import asyncio
import socket
import textwrap
from pathlib import Path

import asyncpg
import pytest

from service.cli import main
from tests.backends import POSTGRES_DSN, unique
from tests.state.stateful import BASE


async def _tables(schema: str) -> set[str]:
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    return {r["table_name"] for r in rows}


def test_migrate_creates_the_schema_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = unique("sb_test")
    config = tmp_path / "shared.yaml"
    config.write_text(
        textwrap.dedent(BASE)
        + f"state: {{backend: shared, postgres_dsn: '{POSTGRES_DSN}', postgres_schema: {schema}}}\n"
    )
    try:
        assert main(["migrate", "--config", str(config)]) == 0
        assert main(["migrate", "--config", str(config)]) == 0
    finally:
        tables = asyncio.run(_tables(schema))
    assert "state schema is up to date (shared)" in capsys.readouterr().out
    assert {"sessions", "session_turns", "usage_ledger", "audit_log", "schema_version"} <= tables


def test_migrate_embedded_writes_the_sqlite_file(tmp_path: Path) -> None:
    config = tmp_path / "embedded.yaml"
    config.write_text(textwrap.dedent(BASE) + f"state: {{data_dir: '{tmp_path / 'd'}'}}\n")
    assert main(["migrate", "--config", str(config)]) == 0
    assert (tmp_path / "d" / "switchboard.sqlite3").is_file()


def test_migrate_reports_a_down_store_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "bad.yaml"
    config.write_text(
        textwrap.dedent(BASE) + "state: {backend: shared, timeout_s: 1, "
        f"postgres_dsn: 'postgresql://postgres:pw@127.0.0.1:{port}/x'}}\n"
    )
    assert main(["migrate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "state store postgres is unavailable" in err
    assert "pw@" not in err


def test_a_relative_data_dir_is_beside_the_config(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "embedded.yaml"
    config.parent.mkdir()
    config.write_text(textwrap.dedent(BASE) + "state: {data_dir: ../state-here}\n")
    assert main(["migrate", "--config", str(config)]) == 0
    assert (tmp_path / "state-here" / "switchboard.sqlite3").is_file()
