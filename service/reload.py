"""Hot reload: validate a changed config and swap the runtime atomically.

``Runtimes`` owns the current runtime (snapshot + router) and the providers behind it. A swap
reuses the provider of every target whose definition is unchanged (its connection pool and
whatever state keys on it stay warm), builds providers for new or changed targets, and closes
the ones it retired only once every call that could still use them has ended. Calls capture
their runtime when they start (``Runner.stream``), so a call in flight finishes on the config
it started with while the next call gets the new one.

``Reloader`` decides when: on SIGHUP (``request()``) and when the file changes (polled, see
``config.watch``). It loads the file with the same ``load`` as start-up; an invalid file is
rejected, the old config stays, and the rejection is logged and counted in
``switchboard_config_reloads_total{result="rejected"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from service.agents.runner import Runtime
from service.config import ConfigError, Snapshot, load
from service.config.watch import FileWatcher
from service.errors import SwitchboardError
from service.providers.base import Provider, TargetSpec

log = logging.getLogger(__name__)

BuildProvider = Callable[[TargetSpec], Provider]
BuildRuntime = Callable[[Snapshot, Mapping[str, Provider]], Runtime]

# Sections built into long-lived parts at start (server, limiter, exporters, stores):
# a reload cannot change them, except these settings, which are read on every call.
RESTART_SECTIONS = (
    "server",
    "transport",
    "workers",
    "rate_limits",
    "observability",
    "state",
)
LIVE_SETTINGS = frozenset(
    {"server.default_deadline_s", "server.max_messages", "transport.max_concurrent_calls"}
)


class Runtimes:
    """The current runtime and its providers; see the module docstring."""

    def __init__(
        self, snapshot: Snapshot, *, build_runtime: BuildRuntime, build_provider: BuildProvider
    ) -> None:
        self._build_runtime = build_runtime
        self._build_provider = build_provider
        self._providers = {name: build_provider(t) for name, t in snapshot.targets.items()}
        self._runtime = build_runtime(snapshot, self._providers)
        self._draining: list[Runtime] = []  # old runtimes that may still have calls
        self._retired: set[Provider] = set()  # replaced, closed when their calls have ended
        self._closers: set[asyncio.Task[None]] = set()
        self._closed = False

    def current(self) -> Runtime:
        return self._runtime

    @property
    def providers(self) -> Mapping[str, Provider]:
        """The current providers by target name."""
        return self._providers

    @property
    def retired(self) -> int:
        """Providers replaced by a reload and not yet closed (calls still use them)."""
        return len(self._retired)

    async def swap(self, snapshot: Snapshot) -> None:
        """Serve new calls from ``snapshot``.

        Raises:
            Exception: whatever building a provider raised; then nothing has changed.
        """
        if self._closed:
            raise RuntimeError("the runtimes are closed")
        old_specs = self._runtime.snapshot.targets
        providers: dict[str, Provider] = {}
        built: list[Provider] = []
        try:
            for name, spec in snapshot.targets.items():
                if old_specs.get(name) == spec:
                    providers[name] = self._providers[name]
                else:
                    provider = self._build_provider(spec)
                    built.append(provider)
                    providers[name] = provider
            runtime = self._build_runtime(snapshot, providers)
        except BaseException:
            for provider in built:
                await provider.aclose()
            raise
        retired = [p for name, p in self._providers.items() if providers.get(name) is not p]
        old = self._runtime
        # The swap itself: one reference, no await in between, so no call sees a mixture.
        self._runtime = runtime
        self._providers = providers
        self._draining = [r for r in self._draining if r.calls.count] + [old]
        if retired:
            self._retired.update(retired)
            task = asyncio.create_task(self._close_when_unused(retired, list(self._draining)))
            self._closers.add(task)
            task.add_done_callback(self._closers.discard)

    async def _close_when_unused(self, providers: list[Provider], users: list[Runtime]) -> None:
        # Only runtimes older than the swap can hold these providers, and they never gain a
        # call again (calls take the current runtime), so once each is idle, nobody is left.
        for runtime in users:
            await runtime.calls.idle()
        for provider in providers:
            await self._close(provider)

    async def _close(self, provider: Provider) -> None:
        if provider in self._retired:
            self._retired.discard(provider)
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing a retired provider failed")

    async def aclose(self) -> None:
        """Close every provider, current and retired. Call after the server has stopped."""
        self._closed = True
        for task in list(self._closers):
            task.cancel()
        await asyncio.gather(*self._closers, return_exceptions=True)
        for provider in list(self._retired):
            await self._close(provider)
        for provider in self._providers.values():
            await provider.aclose()


class Reloader:
    """Reloads the config on request (SIGHUP) and when the file changes."""

    def __init__(
        self,
        runtimes: Runtimes,
        environ: Mapping[str, str],
        *,
        registry: CollectorRegistry | None = None,
        accept: Callable[[Snapshot], None] = lambda _: None,
        swapped: Callable[[Snapshot], Awaitable[None]] | None = None,
    ) -> None:
        """``accept`` vets a valid new snapshot against the running server (it raises
        ConfigError to reject it), e.g. auth turned off on a non-loopback address.
        ``swapped`` is told of each snapshot swapped in (tool sources follow it)."""
        self._swapped = swapped
        self._runtimes = runtimes
        self._environ = environ
        self._accept = accept
        self._requested = asyncio.Event()
        self._lock = asyncio.Lock()
        self._watcher = FileWatcher(*_watched(runtimes.current().snapshot))
        self.reloads = Counter(
            "switchboard_config_reloads",
            "Config reloads by result: ok, or rejected (invalid file; the old config stays).",
            ["result"],
            registry=CollectorRegistry() if registry is None else registry,
        )
        for result in ("ok", "rejected"):
            self.reloads.labels(result)

    def request(self) -> None:
        """Ask for a reload soon (safe from a signal handler on the loop)."""
        self._requested.set()

    async def reload(self, trigger: str = "requested") -> bool:
        """Load the file again and swap it in; False (old config kept) if it is invalid."""
        async with self._lock:
            current = self._runtimes.current().snapshot
            self._watcher.mark_seen()
            try:
                snapshot = load(current.source, self._environ)
                self._accept(snapshot)
                await self._runtimes.swap(snapshot)
                self._watcher.mark_seen(_watched(snapshot))
                if self._swapped is not None:
                    await self._swapped(snapshot)
            except (ConfigError, SwitchboardError) as exc:
                self.reloads.labels("rejected").inc()
                log.error(  # noqa: TRY400 (the message says it all; no traceback needed)
                    "config rejected, keeping the current one: %s",
                    exc,
                    extra={"trigger": trigger, "source": current.source},
                )
                return False
            except Exception:
                self.reloads.labels("rejected").inc()
                log.exception(
                    "config rejected, keeping the current one",
                    extra={"trigger": trigger, "source": current.source},
                )
                return False
            self.reloads.labels("ok").inc()
            needs_restart = sorted(restart_only_changes(current, snapshot))
            if needs_restart:
                log.warning(
                    "config reloaded; these settings take effect only on restart: %s",
                    ", ".join(needs_restart),
                )
            log.info(
                "config reloaded",
                extra={
                    "trigger": trigger,
                    "source": current.source,
                    "agents": {a.name: a.version for a in snapshot.agents.values()},
                },
            )
            return True

    async def run(self) -> None:
        """Serve reload requests and watch the file until cancelled."""
        while True:
            settings = self._runtimes.current().snapshot.reload
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(settings.poll_interval_s):
                    await self._requested.wait()
            if self._requested.is_set():
                self._requested.clear()
                await self.reload("SIGHUP")
            elif settings.watch and self._watcher.changed():
                await self.reload("file changed")


def _watched(snapshot: Snapshot) -> tuple[str, ...]:
    return (snapshot.source, *snapshot.files)


def restart_only_changes(old: Snapshot, new: Snapshot) -> set[str]:
    """Dotted names of the changed settings that a reload cannot apply (bound at start)."""
    changed: set[str] = set()
    for section in RESTART_SECTIONS:
        before: BaseModel = getattr(old, section)
        after: BaseModel = getattr(new, section)
        for name in type(before).model_fields:
            if getattr(before, name) != getattr(after, name):
                changed.add(f"{section}.{name}")
    return changed - LIVE_SETTINGS
