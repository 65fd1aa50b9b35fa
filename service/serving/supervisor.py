"""``serve --workers N``: one supervisor process, N worker processes sharing the port.

Python serves one event loop per process on one core, so N workers (each a full server with
its own loop, started as ``switchboard serve`` with a hidden ``--worker-fds``) use N cores. They
bind the same address with SO_REUSEPORT and the kernel spreads new connections across them.

The supervisor:
- validates the config first (a bad file fails here with exit code 2, before any worker),
- holds the port with a bound, non-listening SO_REUSEPORT socket: it learns the port when
  asked for port 0, keeps it for restarted workers, and receives no connections itself,
- restarts a worker that exits, with exponential backoff (reset after a stable run),
- forwards SIGHUP (reload), and on SIGTERM/SIGINT sends SIGTERM to every worker, waits for
  them to drain (``server.grace_s`` plus a margin), then kills stragglers,
- serves the Prometheus metrics of all workers (prometheus_client's multiprocess mode: each
  worker writes its samples to files in a private directory, the supervisor aggregates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from service.config import ConfigError, Snapshot
from service.observability.collectors import register_standard
from service.serving.sharing import refuse_unshared
from service.serving.worker import WorkerLink, write_port_file

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STABLE_RUN_S = 30.0  # a worker that ran this long restarts without the accumulated backoff
DRAIN_MARGIN_S = 5.0  # past grace_s: time for a worker to close providers and exit


class StartupFailed(Exception):
    """A worker exited or stayed silent before it first served."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT.

    Raises:
        OSError: the address cannot be bound (in use without SO_REUSEPORT, say).
    """
    name = host.strip("[]") or None
    family, kind, proto, _, address = socket.getaddrinfo(
        name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class Slot:
    """One worker position: its current process and how often it was restarted."""

    index: int
    process: asyncio.subprocess.Process | None = None
    lifeline: int | None = None  # our end; closing it (or dying) tells the worker to stop
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0
    exit_code: int | None = None


class SupervisorCollector:
    """The supervisor's own metrics, computed at scrape time (never file-backed)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "switchboard_worker_restarts", "Worker processes restarted after they exited."
        )
        restarts.add_metric([], sum(s.restarts for s in self._supervisor.slots))
        yield restarts
        alive = GaugeMetricFamily("switchboard_workers", "Worker processes serving now.")
        alive.add_metric([], sum(1 for s in self._supervisor.slots if s.ready.is_set()))
        yield alive


class Supervisor:
    """See the module docstring. ``run()`` returns the process exit code."""

    def __init__(
        self,
        snapshot: Snapshot,
        environ: Mapping[str, str],
        *,
        workers: int,
        host: str | None = None,
        port: int | None = None,
        port_file: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._environ = dict(environ)
        self._host = host or snapshot.server.host
        self._port = snapshot.server.port if port is None else port
        self._port_file = port_file
        self._settings = snapshot.workers
        self._clock = clock
        self.slots = [Slot(i) for i in range(workers)]
        self._stopping = asyncio.Event()
        self._all_ready = asyncio.Event()  # every worker served once: start-up is over
        self._metrics_dir = ""

    async def run(self) -> int:
        """Start the workers, keep them running, drain them on SIGTERM.

        Returns 0 when every worker drained and exited cleanly, 1 otherwise.

        Raises:
            ConfigError: the address or the metrics port cannot be bound.
        """
        refuse_unshared(self._snapshot, len(self.slots))
        if self._snapshot.state.backend == "embedded":
            log.warning(
                "state.backend is embedded: the %d workers share the SQLite file, and each "
                "keeps its own response cache in memory",
                len(self.slots),
            )
        with contextlib.ExitStack() as cleanup:
            try:
                holder = cleanup.enter_context(reserve_port(self._host, self._port))
            except OSError as exc:
                raise ConfigError(
                    f"server: cannot listen on {self._host}:{self._port}: {exc.strerror}"
                ) from exc
            self._port = holder.getsockname()[1]
            if MULTIPROC_ENV in self._environ:
                self._metrics_dir = self._environ[MULTIPROC_ENV]
            else:
                # Fresh each run: stale files from an earlier run would be counted again.
                self._metrics_dir = tempfile.mkdtemp(prefix="switchboard-metrics-")
                cleanup.callback(shutil.rmtree, self._metrics_dir, ignore_errors=True)
                self._environ[MULTIPROC_ENV] = self._metrics_dir
            metrics = self._serve_metrics()
            if metrics is not None:
                cleanup.callback(metrics.server_close)
                cleanup.callback(metrics.shutdown)
            failed = await self._supervise()
        if failed is not None:
            log.error("workers failed to start: %s", failed)
            return 1
        clean = all(slot.exit_code == 0 for slot in self.slots)
        log.info("all workers stopped", extra={"clean": clean})
        return 0 if clean else 1

    async def _supervise(self) -> StartupFailed | None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        failed: list[StartupFailed] = []
        try:
            async with asyncio.TaskGroup() as group:
                for slot in self.slots:
                    group.create_task(self._keep(slot))
                starting = group.create_task(self._started())
                group.create_task(self._drain_on_stop(starting))
        except* StartupFailed as group_error:
            failed += group_error.exceptions  # type: ignore[arg-type]
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._kill_all()
        return failed[0] if failed else None

    def _serve_metrics(self) -> WSGIServer | None:
        """Serve on ``observability.metrics`` what every worker wrote (workers serve none).

        Raises:
            ConfigError: the metrics port cannot be bound.
        """
        settings = self._snapshot.observability.metrics
        if settings.port is None:
            return None
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._metrics_dir)  # type: ignore[no-untyped-call]
        registry.register(SupervisorCollector(self))
        register_standard(registry)  # process_* here: the supervisor's own process
        try:
            server, _thread = start_http_server(settings.port, settings.host, registry=registry)
        except OSError as exc:
            raise ConfigError(
                f"observability.metrics: cannot listen on {settings.host}:{settings.port}: "
                f"{exc.strerror}"
            ) from exc
        log.info("metrics of all workers on %s:%s", settings.host, server.server_port)
        return server

    async def _started(self) -> None:
        try:
            async with asyncio.timeout(self._settings.startup_timeout_s):
                await self._all_ready.wait()
        except TimeoutError as exc:
            raise StartupFailed(
                f"not every worker was serving after {self._settings.startup_timeout_s}s"
            ) from exc
        if self._port_file is not None:
            write_port_file(self._port_file, self._port)
        log.info(
            "serving with %d workers",
            len(self.slots),
            extra={"port": self._port, "pids": [s.process.pid for s in self.slots if s.process]},
        )

    async def _keep(self, slot: Slot) -> None:
        """Run the slot's worker; restart it when it exits, until we stop."""
        delay = self._settings.restart_backoff_s
        while not self._stopping.is_set():
            started = self._clock()
            process, ready_fd = await self._spawn(slot)
            async with asyncio.TaskGroup() as group:
                # Ends when the worker reports ready, or when it dies (end of file).
                group.create_task(self._await_ready(slot, process, ready_fd))
                code = await process.wait()
            slot.ready.clear()
            self._release(slot)
            mark_process_dead(process.pid, self._metrics_dir)  # type: ignore[no-untyped-call]
            slot.exit_code = code
            if self._stopping.is_set():
                return
            if not self._all_ready.is_set():
                raise StartupFailed(f"worker {slot.index} exited with code {code} at start-up")
            if self._clock() - started >= STABLE_RUN_S:
                delay = self._settings.restart_backoff_s
            log.warning(
                "worker %d (pid %d) exited with code %s; restarting in %.1fs",
                slot.index,
                process.pid,
                code,
                delay,
            )
            slot.restarts += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            delay = min(delay * 2, self._settings.restart_backoff_max_s)

    async def _spawn(self, slot: Slot) -> tuple[asyncio.subprocess.Process, int]:
        """Start the slot's worker; returns it and the read end of its ready pipe."""
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        link = WorkerLink(ready_w, life_r)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "service",
                "serve",
                "--config",
                self._snapshot.source,
                "--host",
                self._host,
                "--port",
                str(self._port),
                "--worker-fds",
                link.format(),
                env=self._environ,
                pass_fds=(ready_w, life_r),
                # Terminal signals go to the supervisor only; it tells the workers.
                start_new_session=True,
            )
        except BaseException:
            os.close(ready_r)
            os.close(life_w)
            raise
        finally:
            os.close(ready_w)
            os.close(life_r)
        slot.process = process
        slot.lifeline = life_w
        if self._stopping.is_set():  # stopped while it was starting
            process.send_signal(signal.SIGTERM)
        return process, ready_r

    async def _await_ready(self, slot: Slot, process: asyncio.subprocess.Process, fd: int) -> None:
        """Set ``slot.ready`` when the worker reports it serves (nothing if it dies first)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            try:
                data = os.read(fd, 256)
            except OSError:
                data = b""
            if not done.done():
                done.set_result(data)

        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        try:
            data = await done
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        if data and process.returncode is None:
            slot.ready.set()
            log.info("worker %d serving", slot.index, extra={"pid": process.pid})
            if all(s.ready.is_set() for s in self.slots):
                self._all_ready.set()

    def _release(self, slot: Slot) -> None:
        if slot.lifeline is not None:
            os.close(slot.lifeline)
            slot.lifeline = None

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None or process.returncode is not None:
                continue
            # A worker still starting has no SIGHUP handler yet (and reads the file anyway).
            if sig == signal.SIGHUP and not slot.ready.is_set():
                continue
            process.send_signal(sig)

    async def _drain_on_stop(self, starting: asyncio.Task[None]) -> None:
        await self._stopping.wait()
        starting.cancel()  # stopped before every worker came up: stop waiting for them
        log.info("stopping: draining %d workers", len(self.slots))
        self._forward(signal.SIGTERM)
        limit = self._snapshot.server.grace_s + DRAIN_MARGIN_S
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                for slot in self.slots:
                    if slot.process is not None:
                        await slot.process.wait()

    async def _kill_all(self) -> None:
        for slot in self.slots:
            process = slot.process
            if process is not None and process.returncode is None:
                log.warning("killing worker %d (pid %d)", slot.index, process.pid)
                process.kill()
                await process.wait()
                slot.exit_code = -signal.SIGKILL
            self._release(slot)
