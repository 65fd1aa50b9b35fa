"""A durable local outbox: ledger lines and audit entries the durable store could not take.

One SQLite file in the data directory (``outbox.sqlite3``), synchronous=FULL, so a line put
here survives a crash of the process or the machine. Lines come out oldest first; each is
removed only after the durable store has committed it, and the store ignores a line (or
entry) whose id it already has, so a replay interrupted half-way and run again lands every
line exactly once. Several processes may share the file (WAL, busy timeout).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

from service.state.records import AuditEntry, UsageRecord
from service.state.sqlite_file import SqliteFile

T = TypeVar("T")
FILE_NAME = "outbox.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "tenant TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, usage TEXT, audit TEXT)"
)


class Outbox:
    """See the module docstring. ``data_dir`` is created on the first write."""

    def __init__(self, data_dir: str | Path, *, timeout_s: float) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._db = SqliteFile(
            self.path,
            name="outbox",
            timeout_s=timeout_s,
            synchronous="FULL",
            busy_timeout_ms=5000,
            setup=_SCHEMA,
        )
        self._run = self._db.run

    def exists(self) -> bool:
        return self.path.exists()

    async def put(self, usage: UsageRecord | None, audit: AuditEntry | None) -> None:
        """Append a ledger line and/or an audit entry; returns once it is on disk.

        Raises:
            Unavailable: the file cannot be written.
        """
        first = usage or audit
        assert first is not None
        row = (
            first.tenant,
            first.at,
            None if usage is None else json.dumps(asdict(usage)),
            None if audit is None else json.dumps(asdict(audit)),
        )
        await self._run(
            lambda conn: conn.execute(
                "INSERT INTO outbox (tenant, at, usage, audit) VALUES (?, ?, ?, ?)", row
            )
        )

    async def oldest(self, limit: int) -> list[tuple[int, UsageRecord | None, AuditEntry | None]]:
        """Up to ``limit`` of the oldest waiting items, oldest first."""
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT id, usage, audit FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        )
        return [
            (
                row[0],
                None if row[1] is None else _usage(row[1]),
                None if row[2] is None else AuditEntry(**json.loads(row[2])),
            )
            for row in rows
        ]

    async def remove(self, ids: Sequence[int]) -> None:
        marks = ", ".join("?" * len(ids))
        await self._run(
            lambda conn: conn.execute(f"DELETE FROM outbox WHERE id IN ({marks})", tuple(ids))  # noqa: S608 (placeholders only)
        )

    async def count(self) -> int:
        row = await self._run(lambda conn: conn.execute("SELECT count(*) FROM outbox").fetchone())
        return int(row[0])

    async def usage(
        self, tenant: str | None = None, start: float = 0.0, end: float = float("inf")
    ) -> list[UsageRecord]:
        """The waiting ledger lines with ``start <= at < end`` (of ``tenant``, if given)."""
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT usage FROM outbox WHERE (? IS NULL OR tenant = ?) AND at >= ? "
                "AND at < ? AND usage IS NOT NULL ORDER BY id",
                (tenant, tenant, start, end),
            ).fetchall()
        )
        return [_usage(row[0]) for row in rows]

    async def aclose(self) -> None:
        await self._db.aclose()


def _usage(text: str) -> UsageRecord:
    """A ledger line from its JSON (its budget lines back to tuples)."""
    fields = json.loads(text)
    if fields.get("budget_lines") is not None:
        fields["budget_lines"] = tuple((key, until) for key, until in fields["budget_lines"])
    return UsageRecord(**fields)
