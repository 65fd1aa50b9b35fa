"""The plain middle of state: pricing, budget periods, cache keys, session codec, windows."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.agents.spec import AgentSpec, CachePolicy, MemoryPolicy
from service.cache import cache_key, wanted
from service.cache import codec as cache_codec
from service.config import load
from service.config.state_model import BudgetConfig, StateConfig
from service.domain import (
    FinishReason,
    GuardVerdict,
    ImagePart,
    Message,
    Parameters,
    Role,
    TargetRef,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from service.errors import InvalidArgument, Unavailable
from service.sessions import Sessions, codec
from service.state.memory import MemoryFast
from service.state.records import UsageRecord
from service.state.sqlite import SqliteDurable
from service.usage.budgets import applicable


def test_budget_periods_and_scope() -> None:
    now = datetime(2026, 2, 28, 23, 0, tzinfo=UTC).timestamp()
    budgets = [
        BudgetConfig(name="d", period="day", limit_usd=1),
        BudgetConfig(name="m", tenant="acme", per_key=True, period="month", limit_usd=2.5),
        BudgetConfig(name="other", tenant="globex", period="day", limit_usd=1),
    ]
    lines = applicable(budgets, "acme", "k:1", now)
    assert [b.line.key for b in lines] == [
        "acme:d:2026-02-28",
        "acme:m:2026-02:key:k%3A1",
    ]
    assert [b.line.limit_nanos for b in lines] == [10**9, 25 * 10**8]
    assert [round(b.left_s) for b in lines] == [3600, 3600]
    assert lines[1].started_at == datetime(2026, 2, 1, tzinfo=UTC).timestamp()


def _agent(mode: str = "off") -> AgentSpec:
    return AgentSpec(
        name="a",
        description="",
        version="v1",
        system_prompt="",
        route=(),
        parameters=Parameters(),
        overridable_parameters=frozenset(),
        tools=(),
        accepts_caller_tools=False,
        memory=MemoryPolicy(),
        cache=CachePolicy(mode=mode),
    )


def test_cache_modes() -> None:
    assert wanted(_agent("on"), None)
    assert not wanted(_agent("on"), False)
    assert not wanted(_agent("opt_in"), None)
    assert wanted(_agent("opt_in"), True)
    assert not wanted(_agent("off"), None)
    with pytest.raises(InvalidArgument, match="no response cache"):
        wanted(_agent("off"), False)


def test_cache_key_covers_tenant_version_messages_and_parameters() -> None:
    hi = (Message(Role.USER, (TextPart("hi"),)),)
    base = cache_key("t", _agent(), hi, Parameters(), ())
    assert base == cache_key("t", _agent(), hi, Parameters(), ())
    assert base != cache_key("u", _agent(), hi, Parameters(), ())
    assert base != cache_key("t", _agent(), hi, Parameters(temperature=0.1), ())
    other = (Message(Role.USER, (TextPart("hi!"),)),)
    assert base != cache_key("t", _agent(), other, Parameters(), ())
    newer = dataclasses.replace(_agent(), version="v2")
    assert base != cache_key("t", newer, hi, Parameters(), ())


def test_cache_codec_round_trip() -> None:
    target = TargetRef("t", "mock", "echo")
    events = (
        TextDelta("hi "),
        ToolCallDelta(0, "c1", "f", '{"a"'),
        UsageEvent(Usage(3, 4, 1, cost_usd=0.5)),
    )
    entry = cache_codec.decode(cache_codec.encode(target, events, FinishReason.TOOL_CALLS))
    assert entry.target == target
    assert entry.reason is FinishReason.TOOL_CALLS
    assert entry.events[:2] == events[:2]
    assert entry.events[2] == UsageEvent(Usage(3, 4, 1, cost_usd=0.0))
    assert entry.verdicts == ()


def test_cache_codec_keeps_the_answers_guard_verdicts() -> None:
    target = TargetRef("t", "mock", "echo")
    verdicts = (GuardVerdict("pii", "output", "email", "redact", 2),)
    data = cache_codec.encode(target, (TextDelta("[EMAIL]"),), FinishReason.STOP, verdicts)
    assert cache_codec.decode(data).verdicts == verdicts
    older = data.replace(b', "verdicts": [["pii", "output", "email", "redact", 2]]', b"")
    assert b"verdicts" not in older  # an entry written before verdicts were kept
    assert cache_codec.decode(older).verdicts == ()
    with pytest.raises(TypeError):
        cache_codec.decode(data.replace(b", 2]]", b', "2"]]'))


def test_session_codec_round_trip() -> None:
    messages = (
        Message(Role.USER, (TextPart("look"), ImagePart(data=b"\x89PNG", media_type="image/png"))),
        Message(Role.ASSISTANT, (), (ToolCall("c1", "f", "{}"),)),
        Message(Role.TOOL, (TextPart("42"),), tool_call_id="c1"),
        Message(Role.USER, (ImagePart(url="https://x/y.png"),)),
    )
    assert codec.decode(codec.encode(messages)) == messages


async def test_history_window_by_tokens(tmp_path: object) -> None:
    store = SqliteDurable(str(tmp_path), timeout_s=5)
    await store.migrate()
    try:
        sessions = Sessions(store)
        for i in range(4):
            text = f"turn{i} " + "x" * 400  # about 100 tokens a message
            await sessions.append(
                "t", "s", "a", [Message(Role.USER, (TextPart(text),))],
                Message(Role.ASSISTANT, (TextPart("ok"),)),
            )  # fmt: skip
        window = await sessions.history("t", "s", MemoryPolicy(max_turns=10, max_tokens=250))
        assert [m.text.split()[0] for m in window if m.role is Role.USER] == ["turn2", "turn3"]
        turns = await sessions.history("t", "s", MemoryPolicy(max_turns=1))
        assert len(turns) == 2
    finally:
        await store.aclose()


async def test_memory_clock_expires_everything() -> None:
    now = [1000.0]
    fast = MemoryFast(clock=lambda: now[0])
    await fast.put("k", b"v", 10)
    assert (await fast.claim("i", "f", 5)).state == "new"
    now[0] += 11
    assert await fast.get("k") is None
    assert (await fast.claim("i", "g", 5)).state == "new"


async def test_memory_store_is_bounded_and_evicts_the_least_recently_used() -> None:
    fast = MemoryFast(max_entries=3)
    for key in ["a", "b", "c"]:
        await fast.put(key, key.encode(), 60)
    assert await fast.get("a") == b"a"  # "a" is now the most recently used; "b" the least
    for key in ["d", "e"]:
        await fast.put(key, key.encode(), 60)
        assert len(fast._cache) <= 3
    assert [await fast.get(k) for k in "abcde"] == [b"a", None, None, b"d", b"e"]

    for i in range(10):
        assert (await fast.claim(f"i{i}", "f", 60)).state == "new"
        await fast.complete(f"i{i}", "f", b"r", 60)
        assert len(fast._claims) <= 3
    # The oldest records went first; a duplicate of an evicted one would run again.
    assert (await fast.claim("i0", "f", 60)).state == "new"
    assert (await fast.claim("i9", "f", 60)).state == "done"


async def test_memory_store_drops_expired_entries_before_evicting_live_ones() -> None:
    now = [1000.0]
    fast = MemoryFast(clock=lambda: now[0], max_entries=2)
    await fast.put("short", b"s", 10)
    await fast.put("long", b"l", 1000)
    assert await fast.get("short") == b"s"  # the most recently used, "long" the least
    now[0] += 20  # "short" has expired
    await fast.put("new", b"n", 1000)
    # The expired entry made room; the live one, least recently used, stays.
    assert [await fast.get(k) for k in ("short", "long", "new")] == [None, b"l", b"n"]


def test_memory_max_entries_is_configurable() -> None:
    assert StateConfig().memory_max_entries == 100_000
    assert StateConfig(memory_max_entries=10).memory_max_entries == 10


def test_cache_key_changes_with_the_prompt_even_under_a_hand_written_version(
    tmp_path: Path,
) -> None:
    """An operator edits the system prompt and keeps `version: "2026-11-26"`: answers cached
    for the old prompt must not be served for the new one."""
    hi = (Message(Role.USER, (TextPart("hi"),)),)
    keys = []
    for prompt in ("Be brief.", "Answer in French."):
        path = tmp_path / "switchboard.yaml"
        path.write_text(
            "targets: {m: {provider: mock, model: echo}}\n"
            "agents: {a: {route: [m], version: '2026-11-26', system_prompt: '" + prompt + "',"
            " cache: {mode: on}}}\n"
        )
        agent = load(path, {}).agents["a"]
        assert agent.version == "2026-11-26"
        keys.append(cache_key("t", agent, hi, Parameters(), ()))
    assert keys[0] != keys[1]


async def test_a_failed_group_commit_fails_every_line_in_it(tmp_path: Path) -> None:
    """The SQLite ledger commits concurrent lines together; when that commit fails, every
    caller in the group hears UNAVAILABLE (none is told its line was recorded)."""
    store = SqliteDurable(str(tmp_path), timeout_s=5)
    await store.migrate()
    try:
        with sqlite3.connect(store.path) as other:
            other.execute("DROP TABLE usage_ledger")
        line = UsageRecord(1000.0, "t", "k", "r", "a", "t-m", "m", 1, 1, 0, "ok", 1, False)
        outcomes = await asyncio.gather(
            *(store.record_usage(line) for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
    finally:
        await store.aclose()
