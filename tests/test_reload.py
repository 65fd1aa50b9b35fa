"""Hot reload under a running server: edits, invalid edits, a ConfigMap swap, providers."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from switchboard_client import AsyncClient, ResourceExhaustedError, UnauthenticatedError

from service.app import App, build_runtime
from service.auth.keys import new_key, write_keys_file
from service.config import Snapshot, load
from service.config.watch import FileWatcher
from service.providers.base import TargetSpec
from service.providers.mock import MockProvider
from service.reload import Reloader, Runtimes
from service.routing.registry import TargetRegistry
from tests.harness import serve_config
from tests.waiting import eventually

CONFIG = """
auth:
  enabled: false
reload:
  poll_interval_s: 0.05
targets:
  slow:
    provider: mock
    model: echo
    mock:
      tokens_per_s: 20
  fast:
    provider: mock
    model: echo
agents:
  helper:
    system_prompt: {prompt}
    route: [{target}]
"""


def config(prompt: str = "Be brief.", target: str = "slow") -> str:
    return textwrap.dedent(CONFIG).format(prompt=prompt, target=target)


def replace(path: Path, text: str) -> None:
    """Write the file as editors and `kubectl cp` do: a new file renamed over the old."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


def reloads(reloader: Reloader, result: str) -> float:
    for metric in reloader.reloads.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {"result": result}:
                return sample.value
    raise AssertionError(f"no reloads sample for {result!r}")


async def version(client: AsyncClient) -> str:
    return (await client.get_agent("helper")).version


async def test_an_edit_serves_the_next_call_while_a_stream_in_flight_finishes_on_the_old() -> None:
    async with serve_config(config()) as served:
        before = await version(served.client)
        words = " ".join(f"w{i}" for i in range(20))  # one second at 20 tokens/s
        stream = served.client.stream("helper", words)
        async with aclosing(stream):
            start = (await anext(stream)).start
            assert start.target.name == "slow"
            assert start.agent_version == before
            slow_provider = served.app.providers["slow"]

            # New prompt, new route, and the old target redefined (so its provider retires).
            edited = config(prompt="Be very brief indeed.", target="fast")
            replace(served.path, edited.replace("tokens_per_s: 20", "tokens_per_s: 40"))

            async def swapped() -> bool:
                return await version(served.client) != before

            await eventually(swapped, timeout_s=20)
            answer = await served.client.invoke("helper", "hello")
            assert answer.target.name == "fast"
            assert answer.agent_version != before
            # The stream still runs on the old snapshot, so its provider is not closed yet.
            assert served.app.providers["slow"] is not slow_provider
            assert served.app.runtimes.retired == 1
            assert slow_provider.stats.in_flight == 1  # type: ignore[attr-defined]

            rest = [event async for event in stream]

        kinds = [e.WhichOneof("event") for e in rest]
        assert kinds[-1] == "finish"
        assert rest[-1].finish.target.name == "slow"
        assert "".join(e.text_delta.text for e in rest) == words
        assert slow_provider.stats.in_flight == 0  # type: ignore[attr-defined]

        async def closed() -> bool:
            return served.app.runtimes.retired == 0

        await eventually(closed, timeout_s=20)
        assert reloads(served.app.reloader, "ok") == 1


async def test_the_new_prompt_reaches_the_model() -> None:
    async with serve_config(config(prompt="Short.")) as served:
        first = await served.client.invoke("helper", "hi")
        replace(served.path, config(prompt="A much longer system prompt than before."))
        assert await served.app.reload()
        second = await served.client.invoke("helper", "hi")
        # The mock counts the system prompt's words as input tokens: 1 before, 7 after.
        assert second.usage.input_tokens - first.usage.input_tokens == 6
        assert second.agent_version != first.agent_version


async def test_an_invalid_edit_is_rejected_and_the_old_config_keeps_serving() -> None:
    async with serve_config(config()) as served:
        before = await version(served.client)
        replace(served.path, config(target="nowhere"))

        async def rejected() -> bool:
            return reloads(served.app.reloader, "rejected") == 1

        await eventually(rejected, timeout_s=20)
        answer = await served.client.invoke("helper", "still here")
        assert answer.message.content[0].text == "still here"
        assert answer.agent_version == before
        assert reloads(served.app.reloader, "ok") == 0

        replace(served.path, "agents: [not, a, mapping")  # not even YAML
        await eventually(lambda: _true(reloads(served.app.reloader, "rejected") == 2), timeout_s=20)
        assert (await served.client.invoke("helper", "ok")).agent_version == before

        # Fixing the file is picked up like any edit.
        replace(served.path, config(prompt="Fixed."))
        await eventually(lambda: _true(reloads(served.app.reloader, "ok") == 1), timeout_s=20)
        assert (await served.client.invoke("helper", "ok")).agent_version != before


async def _true(value: bool) -> bool:
    return value


async def test_unchanged_targets_keep_their_provider_and_changed_ones_get_a_new_one() -> None:
    async with serve_config(config(target="fast")) as served:
        slow, fast = served.app.providers["slow"], served.app.providers["fast"]
        text = config(prompt="Other.", target="fast").replace("tokens_per_s: 20", "ttft_s: 0.01")
        replace(served.path, text)
        assert await served.app.reload()
        assert served.app.providers["fast"] is fast
        assert served.app.providers["slow"] is not slow
        # Nothing was running on the old runtime: the replaced provider is closed at once.
        await eventually(lambda: _true(served.app.runtimes.retired == 0), timeout_s=20)


async def test_server_settings_changed_on_reload_are_reported_not_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_config(config()) as served:
        replace(served.path, config() + "server:\n  port: 6000\n  default_deadline_s: 30\n")
        assert await served.app.reload()
        assert served.app.snapshot.server.default_deadline_s == 30  # read on every call
        [warning] = [r.getMessage() for r in caplog.records if "on restart" in r.getMessage()]
        assert "server.port" in warning
        assert "default_deadline_s" not in warning


@pytest.fixture
async def configmap(tmp_path: Path) -> AsyncIterator[tuple[Path, App, AsyncClient]]:
    """A config laid out as a Kubernetes ConfigMap volume: links to a timestamped dir."""
    first = tmp_path / "..2026_11_26_10_00_00.000000001"
    first.mkdir()
    (first / "switchboard.yaml").write_text(config())
    (tmp_path / "..data").symlink_to(first.name)
    path = tmp_path / "switchboard.yaml"
    path.symlink_to("..data/switchboard.yaml")
    app = App(load(path, {}), environ={})
    port = await app.start("127.0.0.1", 0)
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        try:
            yield tmp_path, app, client
        finally:
            await app.stop(0)


async def test_a_configmap_symlink_swap_is_picked_up(
    configmap: tuple[Path, App, AsyncClient],
) -> None:
    directory, app, client = configmap
    before = await version(client)
    # What the kubelet does: a new timestamped dir, then `..data` renamed over atomically.
    second = directory / "..2026_11_26_10_05_00.000000002"
    second.mkdir()
    (second / "switchboard.yaml").write_text(config(prompt="Swapped.", target="fast"))
    (directory / "..data_tmp").symlink_to(second.name)
    (directory / "..data_tmp").replace(directory / "..data")

    async def swapped() -> bool:
        return await version(client) != before

    await eventually(swapped, timeout_s=20)
    assert (await client.invoke("helper", "hi")).target.name == "fast"
    assert reloads(app.reloader, "ok") == 1


async def test_sighup_style_request_reloads_even_with_watching_off() -> None:
    text = config().replace("poll_interval_s: 0.05", "poll_interval_s: 0.05\n  watch: false")
    async with serve_config(text) as served:
        before = await version(served.client)
        replace(served.path, text.replace("Be brief.", "Changed."))
        served.app.reloader.request()  # what the SIGHUP handler calls
        await eventually(lambda: _version_differs(served.client, before), timeout_s=20)
        assert reloads(served.app.reloader, "ok") == 1


async def _version_differs(client: AsyncClient, before: str) -> bool:
    return await version(client) != before


def test_file_watcher_sees_edits_replacements_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    watcher = FileWatcher(path)
    assert not watcher.changed()
    path.write_text("a: 22\n")  # size differs, whatever the clock's resolution
    assert watcher.changed()
    assert not watcher.changed()
    replace(path, "a: 22\n")  # same bytes, new inode
    assert watcher.changed()
    os.remove(path)
    assert watcher.changed()
    assert not watcher.changed()
    path.write_text("a: 1\n")
    assert watcher.changed()


async def test_health_stays_serving_across_a_reload() -> None:
    async with serve_config(config()) as served:
        replace(served.path, config(prompt="x"))
        assert await served.app.reload()
        stub = health_pb2_grpc.HealthStub(served.channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


class Recording(MockProvider):
    """The mock provider, noting in ``closed`` when it is closed."""

    def __init__(self, target: TargetSpec, closed: list[str]) -> None:
        super().__init__(target)
        self.name = f"{target.name}@{target.options['tokens_per_s']:g}"
        self._closed = closed

    async def aclose(self) -> None:
        self._closed.append(self.name)


async def test_a_provider_kept_by_one_reload_and_replaced_by_the_next_waits_for_older_calls(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    closed: list[str] = []

    def snapshot(prompt: str, speed: int) -> Snapshot:
        path.write_text(config(prompt=prompt).replace("tokens_per_s: 20", f"tokens_per_s: {speed}"))
        return load(path, {})

    first_snapshot = snapshot("a", 20)
    targets = TargetRegistry(first_snapshot.resilience)  # outlives every runtime, as in App
    runtimes = Runtimes(
        first_snapshot,
        build_runtime=lambda snap, providers: build_runtime(snap, providers, targets),
        build_provider=lambda target: Recording(target, closed),
    )
    first, slow = runtimes.current(), runtimes.providers["slow"]
    first.calls.enter()  # a call on the first config, as Runner.stream counts it
    await runtimes.swap(snapshot("b", 20))  # prompt only: the slow provider is kept
    assert runtimes.providers["slow"] is slow
    second = runtimes.current()
    second.calls.enter()
    await runtimes.swap(snapshot("b", 40))  # the slow target changes: its provider retires
    assert runtimes.retired == 1
    second.calls.leave()
    for _ in range(3):  # give the closer its turns: the first config's call still holds it
        await asyncio.sleep(0)
    assert closed == []
    first.calls.leave()
    await eventually(lambda: _true(closed == ["slow@20"]), timeout_s=20)
    assert runtimes.retired == 0
    await runtimes.aclose()
    assert sorted(closed) == ["fast@0", "slow@20", "slow@40"]


async def test_a_rotated_secret_file_is_picked_up_and_its_target_gets_a_new_client(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "upstream-key"
    secret.write_text("first-key\n")
    text = config(target="fast").replace(
        "  fast:\n    provider: mock\n",
        f"  fast:\n    provider: mock\n    api_key: {{file: {secret}}}\n",
    )
    async with serve_config(text) as served:
        before = served.app.providers["fast"]
        replace(secret, "second-key\n")  # what the kubelet does to a Secret volume, in effect
        await eventually(lambda: _true(reloads(served.app.reloader, "ok") == 1), timeout_s=20)
        assert served.app.providers["fast"] is not before
        assert served.app.snapshot.targets["fast"].api_key.reveal() == "second-key"  # type: ignore[union-attr]
        assert (await served.client.invoke("helper", "still fine")).target.name == "fast"


async def test_a_new_api_key_in_the_keys_file_works_without_a_restart(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    write_keys_file(keys_file, [])
    text = config().replace("auth:\n  enabled: false\n", f"auth:\n  keys_file: {keys_file}\n")
    async with serve_config(text) as served:
        key, record = new_key("acme")
        async with AsyncClient(served.address, api_key=key) as client:
            with pytest.raises(UnauthenticatedError):
                await client.invoke("helper", "hello")
            write_keys_file(keys_file, [record])  # what `switchboard keys create` does

            async def accepted() -> bool:
                try:
                    await client.invoke("helper", "hello")
                except UnauthenticatedError:
                    return False
                return True

            await eventually(accepted, timeout_s=20)
        assert reloads(served.app.reloader, "ok") == 1


async def test_a_reload_cannot_turn_auth_off_on_a_non_loopback_address(tmp_path: Path) -> None:
    """Bound on 0.0.0.0 with auth on (as `serve --host 0.0.0.0` does), an edit that turns
    auth off is rejected: the old config stays and a call without a key is refused."""
    key, record = new_key("acme")
    write_keys_file(tmp_path / "keys.yaml", [record])
    body = """
        targets: {m: {provider: mock, model: echo}}
        agents: {echo: {route: [m]}}
        observability: {metrics: {port: null}}
        state: {backend: embedded, data_dir: data}
    """
    path = tmp_path / "switchboard.yaml"
    path.write_text(textwrap.dedent(body) + "auth: {enabled: true, keys_file: keys.yaml}\n")
    app = App(load(path, {}), environ={})
    port = await app.start("0.0.0.0", 0)
    try:
        async with AsyncClient(f"127.0.0.1:{port}", api_key=key) as client:
            assert (await client.invoke("echo", "hi")).message.content[0].text == "hi"
        path.write_text(textwrap.dedent(body) + "auth: {enabled: false}\n")

        assert await app.reload() is False

        assert reloads(app.reloader, "rejected") == 1
        async with AsyncClient(f"127.0.0.1:{port}") as anonymous:
            with pytest.raises(UnauthenticatedError):
                await anonymous.invoke("echo", "hi")
    finally:
        await app.stop(0)


async def test_a_method_no_longer_exempt_after_a_reload_is_rate_limited(tmp_path: Path) -> None:
    """Exempt methods come from the auth config, which reloads: the rate limit follows."""
    body = """
        targets: {m: {provider: mock, model: echo}}
        agents: {echo: {route: [m]}}
        rate_limits:
          tenant: {requests_per_min: 1}
        auth:
          enabled: false
          exempt_methods: [%s]
    """
    health = '"/grpc.health.v1.Health/"'
    listing = '"/switchboard.v1.AgentService/ListAgents"'
    async with serve_config(body % f"{health}, {listing}") as s:
        for _ in range(3):  # exempt: never counted
            assert [a.name for a in await s.client.list_agents()] == ["echo"]
        s.path.write_text(textwrap.dedent(body % health))
        assert await s.app.reload() is True

        await s.client.list_agents()
        with pytest.raises(ResourceExhaustedError):
            await s.client.list_agents()
