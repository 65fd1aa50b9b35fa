"""DBOS, owned: the durable-execution library under every workflow run.

DBOS Transact (``dbos`` on PyPI) checkpoints each workflow and each step in a system
database and, on launch, re-runs the workflows its executor left unfinished, skipping every
step already recorded. It is a process singleton (``DBOS(config=...)``, ``DBOS.launch()``,
``DBOS.destroy()``): one :class:`Engine` per process owns it, launched on the server's event
loop (DBOS then runs recovered async workflows there, beside the clients they use).

Backends follow ``state.backend``: ``embedded`` keeps the system database in
``<data_dir>/workflows.sqlite``, in WAL mode (:func:`use_wal`; executor ``local``: a restart
resumes its own runs);
``shared`` puts it in the state PostgreSQL, schema ``<postgres_schema>_dbos``, and every
process is its own executor. Open-source DBOS recovers only its own executor's runs at
launch, so a shared replica also watches the others: each executor holds a PostgreSQL
advisory lock on a connection of its own for its whole life; the lock of one that died is
free (its connection closed with it), and a replica that finds it free on two sweeps in a row
hands that executor's runs back to DBOS's queue (``_recover_pending_workflows``, the call
behind DBOS's own recovery endpoint: idempotent on the executor id, and a queue hands each
run to exactly one executor).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
from dbos import DBOS, DBOSConfig, DBOSPortableJSONSerializer

from service.config.state_model import StateConfig
from service.secrets import Secret
from service.state import sqlite_file

log = logging.getLogger(__name__)

APP_NAME = "switchboard"
# Runs are recovered only by executors of the same application version: bump it when the
# workflow functions' shape changes in a way an unfinished run could not replay.
APP_VERSION = "switchboard-workflows-2"
LOCK_NAMESPACE = "switchboard.dbos.executor:"

WorkflowBody = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def lock_key(executor_id: str) -> int:
    """The advisory lock (a signed 64-bit key) that says ``executor_id`` is alive."""
    digest = hashlib.sha256((LOCK_NAMESPACE + executor_id).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def use_wal(path: Path, timeout_s: float) -> None:
    """Put the SQLite file ``path`` (created if missing) in WAL mode, which the file keeps
    for every later connection (https://sqlite.org/wal.html, "Persistence of WAL mode").

    DBOS opens its SQLite system database in the default rollback-journal mode, where each
    commit syncs the journal, the database and the folder; in WAL mode a commit appends to
    the WAL and syncs only it (``synchronous`` stays DBOS's default, FULL: a commit survives
    a power loss as before). This cut the checkpoint cost of a step by about half
    (docs/workflows.md, "What durability costs"). WAL needs the file on a local disk.

    Raises:
        sqlite3.Error: the file cannot be opened or switched (locked past ``timeout_s``).
    """
    connection = sqlite3.connect(path, timeout=timeout_s)
    try:
        sqlite_file.use_wal(connection, timeout_s)
    finally:
        connection.close()


def system_schema(state: StateConfig) -> str:
    return "dbos" if state.postgres_schema == "public" else f"{state.postgres_schema}_dbos"


class Engine:
    """Configures, launches and destroys DBOS; registers the workflow functions; sweeps for
    dead executors (shared backend)."""

    def __init__(
        self,
        state: StateConfig,
        data_dir: Path,
        postgres_dsn: Secret | None,
        *,
        sweep_interval_s: float = 2.0,
    ) -> None:
        self._state = state
        self._dsn = postgres_dsn
        self.shared = state.backend == "shared"
        self.executor_id = (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if self.shared
            else "local"
        )
        self._sqlite: Path | None = None
        if self.shared:
            assert postgres_dsn is not None
            url = postgres_dsn.reveal()
        else:
            self._sqlite = data_dir / "workflows.sqlite"
            url = f"sqlite:///{self._sqlite}"
        self._config: DBOSConfig = {
            "name": APP_NAME,
            "system_database_url": url,
            "application_version": APP_VERSION,
            "executor_id": self.executor_id,
            "dbos_system_schema": system_schema(state),
            "log_level": "WARNING",
            "serializer": DBOSPortableJSONSerializer(),
            "sys_db_pool_size": max(4, state.pool_size),
            "notification_listener_polling_interval_sec": 0.05,
            # DBOS's pool also becomes the loop's default executor: bounded, unlike its default.
            "max_executor_threads": 64,
        }
        self._sweep_interval_s = sweep_interval_s
        self._functions: dict[str, Callable[..., Any]] = {}
        self._lock: asyncpg.Connection | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.launched = False

    def register(self, name: str, body: WorkflowBody) -> Callable[..., Any]:
        """Register ``body`` as the DBOS workflow ``name`` (before :meth:`start`); returns
        the function to start runs with."""

        async def workflow(payload: dict[str, Any]) -> dict[str, Any]:
            return await body(payload)

        # A plain function: DBOS marks what it registers, which a bound method refuses.
        wrapped: Callable[..., Any] = DBOS.workflow(name=name)(workflow)
        self._functions[name] = wrapped
        return wrapped

    async def start(self) -> None:
        """Launch DBOS on the running loop: migrates its schema and re-queues this executor's
        unfinished runs. Shared: takes this executor's liveness lock and starts the sweeper.

        Raises:
            Unavailable: the system database cannot be reached.
        """
        from service.errors import Unavailable  # noqa: PLC0415

        if self.shared:
            try:
                self._lock = await self._connect()
                await self._lock.execute("SELECT pg_advisory_lock($1)", lock_key(self.executor_id))
            except (OSError, asyncpg.PostgresError) as exc:
                raise Unavailable(f"workflows: cannot reach PostgreSQL: {exc}") from None
        if self._sqlite is not None:
            try:
                self._sqlite.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(use_wal, self._sqlite, self._state.timeout_s)
            except (OSError, sqlite3.Error) as exc:
                raise Unavailable(f"workflows: cannot open the durable store: {exc}") from None
        DBOS(config=self._config)
        try:
            DBOS.launch()  # on the loop's thread: DBOS adopts this loop for async workflows
        except Exception as exc:
            DBOS.destroy()
            raise Unavailable(f"workflows: cannot start the durable store: {exc}") from exc
        self.launched = True
        if self.shared:
            self._sweeper = asyncio.create_task(self._sweep(), name="workflow-recovery")

    async def stop(self) -> None:
        """Stop sweeping, then destroy DBOS (its threads joined off the loop) and its
        registry of workflow functions, launched or not: the registry is a process global,
        and through the functions :meth:`register` put there it held everything the runs
        use (the whole app, its gRPC server and grpc's poller thread among them) past the
        end of the process's work. Runs still in progress stay pending in the system
        database: a restart or another replica resumes them."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait([self._sweeper])
        if self.launched:
            self.launched = False
            # DBOS made its own pool the loop's default executor (asyncio.to_thread): it is
            # shut down with DBOS, so the loop gets a fresh one, which runs the destroy.
            loop = asyncio.get_running_loop()
            pool = ThreadPoolExecutor(thread_name_prefix="asyncio")
            loop.set_default_executor(pool)
            await loop.run_in_executor(pool, functools.partial(DBOS.destroy, destroy_registry=True))
        elif self._functions:
            DBOS.destroy(destroy_registry=True)  # no instance to destroy: only the registry
        self._functions.clear()
        if self._lock is not None:
            with contextlib.suppress(Exception):
                await self._lock.close()

    async def _connect(self) -> asyncpg.Connection:
        assert self._dsn is not None
        connection: asyncpg.Connection = await asyncpg.connect(
            self._dsn.reveal(), timeout=self._state.timeout_s
        )
        return connection

    async def _sweep(self) -> None:
        """Every ``sweep_interval_s``: executors with pending runs whose liveness lock is
        free on two sweeps in a row are dead; their runs go back to the queue."""
        suspects: set[str] = set()
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                suspects = await self._sweep_once(suspects)
            except Exception:
                log.warning("workflow recovery sweep failed", exc_info=True)

    async def _sweep_once(self, suspects: set[str]) -> set[str]:
        pending = await DBOS.list_workflows_async(
            status="PENDING", load_input=False, load_output=False
        )
        executors = {w.executor_id for w in pending if w.executor_id} - {self.executor_id}
        if not executors:
            return set()
        probe = await self._connect()
        dead: set[str] = set()
        try:
            for executor in executors:
                key = lock_key(executor)
                if await probe.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    await probe.execute("SELECT pg_advisory_unlock($1)", key)
                    dead.add(executor)
        finally:
            await probe.close()
        for executor in dead & suspects:
            log.warning("recovering the runs of a dead executor", extra={"executor": executor})
            await asyncio.to_thread(DBOS._recover_pending_workflows, [executor])
        return dead - suspects
