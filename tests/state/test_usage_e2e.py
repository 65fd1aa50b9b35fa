"""Cost, the usage ledger, UsageService, budgets and the audit log, on both backends."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf import timestamp_pb2
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import session_pb2 as spb
from switchboard.v1 import usage_pb2 as upb
from switchboard_client import ResourceExhaustedError

from service.errors import ResourceExhausted
from tests.state.stateful import invoke_as, serve_state, sessions, usage

pytestmark = pytest.mark.asyncio

# echo is priced at 1000 and 2000 USD per million input and output tokens: 0.001 USD per
# input token, 0.002 per output token (dear, so that budgets bind within a few calls).
IN, OUT = 0.001, 0.002


@pytest.fixture(params=["embedded", "shared"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


async def test_cost_is_priced_per_model_and_returned(backend: str) -> None:
    async with serve_state(backend) as served:
        answer = await served.client.invoke("echo", "one two three")
        u = answer.usage
        assert u.output_tokens == 3
        assert u.cost_usd == pytest.approx(u.input_tokens * IN + 3 * OUT)

        events = [e async for e in served.client.stream("echo", "one two three")]
        (streamed,) = [e.usage for e in events if e.WhichOneof("event") == "usage"]
        assert streamed.cost_usd == pytest.approx(u.cost_usd)


async def test_get_usage_groups_and_ranges(backend: str) -> None:
    async with serve_state(backend) as served:
        before = time.time()
        a = await served.client.invoke("echo", "a b")
        b = await served.client.invoke("echo", "c d e")
        c = await served.client.invoke("chat", "hello")
        with pytest.raises(Exception, match="temperature"):
            await served.client.invoke("chat", "x", parameters=_temperature(3.0))
        stub = usage(served)

        total = await stub.GetUsage(upb.GetUsageRequest(start_time=_ts(before - 1)))
        (everything,) = total.groups
        # Validation failures never reach the pipeline: three calls are recorded.
        assert everything.calls == 3
        assert everything.failed_calls == 0
        assert everything.output_tokens == sum(r.usage.output_tokens for r in (a, b, c))
        assert everything.cost_usd == pytest.approx(
            a.usage.cost_usd + b.usage.cost_usd + c.usage.cost_usd
        )

        by = await stub.GetUsage(
            upb.GetUsageRequest(
                start_time=_ts(before - 1),
                group_by=[upb.USAGE_DIMENSION_AGENT, upb.USAGE_DIMENSION_MODEL],
            )
        )
        assert [(g.agent, g.model, g.calls) for g in by.groups] == [
            ("chat", "compose", 1),
            ("echo", "echo", 2),
        ]
        keyed = await stub.GetUsage(
            upb.GetUsageRequest(start_time=_ts(before - 1), group_by=[upb.USAGE_DIMENSION_KEY])
        )
        assert [(g.key_id, g.calls) for g in keyed.groups] == [("", 3)]

        earlier = await stub.GetUsage(
            upb.GetUsageRequest(start_time=_ts(before - 100), end_time=_ts(before - 50))
        )
        assert earlier.groups == []
        today = await stub.GetUsage(upb.GetUsageRequest())
        assert today.groups[0].calls == 3
        assert today.start_time.ToSeconds() <= before


async def test_get_usage_rejects_bad_ranges(backend: str) -> None:
    async with serve_state(backend) as served:
        stub = usage(served)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUsage(upb.GetUsageRequest(start_time=_ts(10), end_time=_ts(5)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "end_time" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetUsage(upb.GetUsageRequest(group_by=[upb.USAGE_DIMENSION_UNSPECIFIED]))
        assert "group_by[0]" in (caught.value.details() or "")


async def test_usage_is_tenant_scoped(backend: str) -> None:
    async with serve_state(backend) as served:
        before = time.time() - 1
        await invoke_as(served.app.runner, "acme", "echo", "theirs", key_id="k-acme")
        await served.client.invoke("echo", "mine")

        mine = await usage(served).GetUsage(
            upb.GetUsageRequest(start_time=_ts(before), group_by=[upb.USAGE_DIMENSION_KEY])
        )
        assert [(g.key_id, g.calls) for g in mine.groups] == [("", 1)]
        acme = await served.app.stores.durable.totals("acme", before, time.time() + 1, ["key_id"])
        assert [(t.key_id, t.calls) for t in acme] == [("k-acme", 1)]


async def test_calls_are_audited_without_prompt_text(backend: str) -> None:
    async with serve_state(backend) as served:
        await served.client.invoke("echo", "top secret words", request_id="audit-1")
        with pytest.raises(grpc.aio.AioRpcError, match="no session"):
            await sessions(served).DeleteSession(spb.DeleteSessionRequest(id="nope"))

        entries = await served.app.stores.durable.recent_audit("default", 10)
        assert [(e.action, e.resource, e.outcome) for e in entries] == [
            ("DeleteSession", "session:nope", "NotFound"),
            ("call", "agent:echo", "ok"),
        ]
        assert entries[1].request_id == "audit-1"
        assert not any("secret" in str(e) for e in entries)


def _temperature(value: float) -> pb.Parameters:
    return pb.Parameters(temperature=value)


# budgets

BUDGETS = """
budgets:
  - name: tenant-daily
    period: day
    limit_usd: {limit}
"""


async def test_over_budget_is_resource_exhausted_naming_the_budget(backend: str) -> None:
    # One echo call of "a b" with max_tokens 5 reserves its bound: (8 + 8 + 3 bytes) input
    # tokens and 5 output tokens, 0.029 USD; it costs 0.006 USD.
    async with serve_state(backend, BUDGETS.format(limit=0.05)) as served:
        params = _max_tokens(5)
        first = await served.client.invoke("echo", "a b", parameters=params)
        assert first.usage.cost_usd > 0
        error = None
        for _ in range(10):
            try:
                await served.client.invoke("echo", "a b", parameters=params)
            except ResourceExhaustedError as exc:
                error = exc
                break
        assert error is not None, "the budget never bound"
        assert "budget 'tenant-daily'" in str(error)
        (violation,) = error.violations
        assert violation.subject == "tenant:default"
        assert "budget tenant-daily: 0.05 USD per day" in violation.description
        assert error.retry_after_s is not None
        assert 0 < error.retry_after_s <= 86400


async def test_a_concurrent_burst_cannot_overspend(backend: str) -> None:
    limit = 0.05
    async with serve_state(backend, BUDGETS.format(limit=limit)) as served:
        params = _max_tokens(5)

        async def call() -> float | None:
            try:
                answer = await served.client.invoke("echo", "a b c", parameters=params)
            except ResourceExhaustedError:
                return None
            return answer.usage.cost_usd

        costs = await asyncio.gather(*(call() for _ in range(30)))
        spent = [c for c in costs if c is not None]
        assert spent, "some calls fit in the budget"
        assert len(spent) < 30, "the budget stopped the burst"
        assert sum(spent) <= limit + 1e-9

        # The ledger agrees with what callers were told.
        totals = await served.app.stores.durable.totals("default", 0, time.time() + 1, ())
        assert totals[0].cost_nanos / 1e9 == pytest.approx(sum(spent))


async def test_budgets_are_per_tenant(backend: str) -> None:
    async with serve_state(backend, BUDGETS.format(limit=0.05)) as served:
        runner = served.app.runner
        answered = 0
        for _ in range(20):
            try:
                await invoke_as(runner, "acme", "echo", "a b c d", max_tokens=5)
            except ResourceExhausted:
                break
            answered += 1
        assert 1 <= answered < 20
        # acme's budget is spent; the default tenant's is untouched.
        answer = await served.client.invoke("echo", "a b", parameters=_max_tokens(5))
        assert answer.usage.cost_usd > 0


async def test_per_key_budget_names_the_key(backend: str) -> None:
    extra = """
    budgets:
      - name: per-key
        tenant: acme
        per_key: true
        period: month
        limit_usd: 0.0001
    """
    async with serve_state(backend, extra) as served:
        with pytest.raises(ResourceExhausted) as caught:
            await invoke_as(served.app.runner, "acme", "echo", "a", key_id="k1", max_tokens=5)
        assert caught.value.violations[0].subject == "key:k1"
        assert "per month" in caught.value.violations[0].description
        # Another tenant is not bound by acme's budget.
        await served.client.invoke("echo", "a", parameters=_max_tokens(5))


def _max_tokens(value: int) -> pb.Parameters:
    return pb.Parameters(max_tokens=value)
