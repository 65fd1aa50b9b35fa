"""The stateful steps around routing one agent call, in order:

1. load the session's history (if the request names a session; a session belongs to the
   agent that created it: another agent's is FAILED_PRECONDITION);
2. reserve the call's estimated cost on the caller's budgets;
3. serve from the response cache (single-flight) or route upstream, pricing the usage;
4. on Finish, before the caller sees it: settle the reservation to the real cost, and record
   the call (ledger line and audit entry) together with the session's new turn, if any, in
   one transaction;
5. a call that fails or is cancelled releases its reservation, appends nothing, and is
   recorded with its error kind.

Ledger, audit and settlement failures are logged, not raised: the answer was produced and a
reservation expires on its own. A session append that fails fails the call (the turn would
silently be lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Protocol

from service.agents.spec import AgentSpec
from service.cache import ResponseCache, cache_key, wanted
from service.config.state_model import BudgetConfig
from service.context import current
from service.deadline import Deadline
from service.domain import (
    AgentRequest,
    Event,
    Finish,
    Fold,
    Message,
    Role,
    Start,
    TargetRef,
    TextPart,
    UsageEvent,
)
from service.errors import InvalidArgument, SwitchboardError
from service.sessions import Sessions
from service.sessions.codec import estimate_tokens
from service.state.records import AuditEntry, UsageRecord
from service.state.stores import Stores
from service.usage.budgets import Budgets, Reservation
from service.usage.pricing import NANOS_PER_USD, PriceTable, usd

log = logging.getLogger(__name__)

Route = Callable[[tuple[Message, ...], Deadline], AsyncGenerator[Event, None]]
DEFAULT_OUTPUT_ESTIMATE = 4096


class Pipeline(Protocol):
    def run(
        self, request: AgentRequest, agent: AgentSpec, route: Route, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """The call's events; ``route(history, deadline)`` produces them upstream."""
        ...


class Stateless:
    """No state: route the request as it is."""

    async def run(
        self, request: AgentRequest, agent: AgentSpec, route: Route, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        async with aclosing(route((), deadline)) as events:
            async for event in events:
                yield event


class StatePipeline:
    """See the module docstring. Built once by the composition root."""

    def __init__(
        self,
        stores: Stores,
        *,
        pricing: Callable[[], PriceTable],
        budgets: Callable[[], Sequence[BudgetConfig]],
        reservation_ttl_s: float,
        on_cache_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._durable = stores.durable
        self._sessions = Sessions(stores.durable)
        self._budgets = Budgets(stores.fast, hold_s=reservation_ttl_s, ledger=stores.durable)
        self.cache = ResponseCache(stores.fast, on_cache_lookup)
        self._pricing = pricing
        self._budget_configs = budgets

    async def run(
        self, request: AgentRequest, agent: AgentSpec, route: Route, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        ctx = current()
        began = time.monotonic()
        prices = self._pricing()
        reservation: Reservation | None = None
        fold = Fold()
        start: Start | None = None
        finish: Finish | None = None
        status = "ok"
        recorded = False
        try:
            use_cache = wanted(agent, request.cache)
            history: tuple[Message, ...] = ()
            if request.session_id:
                history = await self._sessions.history(
                    ctx.tenant, request.session_id, agent.memory, agent.name
                )
                if not history and not request.messages:
                    raise InvalidArgument.field(
                        "messages",
                        f"at least one message is required: session {request.session_id!r} "
                        "has no history",
                    )
            parameters = agent.parameters.overridden_by(request.parameters)
            messages = history + request.messages
            reservation = await self._budgets.reserve(
                self._budget_configs(),
                ctx.tenant,
                ctx.key_id,
                _estimate(prices, agent, messages, parameters.max_tokens),
            )

            def produce() -> AsyncGenerator[Event, None]:
                return _priced(route(history, deadline), prices)

            if use_cache:
                key = cache_key(ctx.tenant, agent, messages, parameters, request.tools)
                opening = Start(request.request_id, agent.name, agent.version, agent.route[0].ref)
                source = self.cache.serve(key, agent.cache.ttl_s, opening, produce, deadline)
            else:
                source = produce()
            async with aclosing(source) as events:
                async for event in events:
                    fold.add(event)
                    if isinstance(event, Start):
                        start = event
                    if isinstance(event, Finish):
                        # Settled, appended and recorded before the caller sees the Finish.
                        finish = event
                        settling, reservation = reservation, None
                        usage, audit = _records(request, agent, fold, start, finish, "ok", began)
                        await self._finished(request, fold, settling, usage, audit)
                        recorded = True
                    yield event
        except BaseException as exc:
            status = _status(exc)
            raise
        finally:
            if reservation is not None:
                await self._release(reservation)
            if not recorded:
                await self._write(*_records(request, agent, fold, start, finish, status, began))

    async def _finished(
        self,
        request: AgentRequest,
        fold: Fold,
        reservation: Reservation | None,
        usage: UsageRecord,
        audit: AuditEntry,
    ) -> None:
        """Settle the budget, append the turn and record the call (raises if the append
        fails: the turn must not be lost silently)."""
        if reservation is not None:
            await self._settle(reservation, usage.cost_nanos)
        if request.session_id:
            answer = fold.result()
            # The turn, the ledger line and the audit entry: one commit.
            await self._sessions.append(
                usage.tenant,
                request.session_id,
                usage.agent,
                request.messages,
                answer.message,
                usage=usage,
                audit=audit,
            )
        else:
            await self._write(usage, audit)

    async def _settle(self, reservation: Reservation, amount: int) -> None:
        try:
            await self._budgets.settle(reservation, amount)
        except SwitchboardError as exc:
            log.exception("budget settlement failed (the reservation will expire): %s", exc.message)

    async def _release(self, reservation: Reservation) -> None:
        try:
            await self._budgets.release(reservation)
        except SwitchboardError as exc:
            log.exception("budget release failed (the reservation will expire): %s", exc.message)

    async def _write(self, usage: UsageRecord, audit: AuditEntry) -> None:
        try:
            await self._durable.record_usage(usage, audit)
        except SwitchboardError as exc:
            log.exception("usage ledger write failed: %s", exc.message)


def _records(  # noqa: PLR0917 (one call's facts)
    request: AgentRequest,
    agent: AgentSpec,
    fold: Fold,
    start: Start | None,
    finish: Finish | None,
    status: str,
    began: float,
) -> tuple[UsageRecord, AuditEntry]:
    """The call's ledger line and audit entry."""
    ctx = current()
    now = time.time()
    usage = fold.usage if start is not None and finish is not None else None
    target = (finish.target if finish else None) or (start.target if start else None)
    record = UsageRecord(
        at=now,
        tenant=ctx.tenant,
        key_id=ctx.key_id,
        request_id=request.request_id,
        agent=agent.name,
        target=target.name if target else "",
        model=target.model if target else "",
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cost_nanos=_nanos(usage.cost_usd) if usage else 0,
        status=status,
        latency_ms=round((time.monotonic() - began) * 1000),
        cache_hit=bool(finish and finish.cache_hit),
        cached_input_tokens=usage.cached_input_tokens if usage else 0,
        cache_creation_5m_input_tokens=usage.cache_creation_5m_input_tokens if usage else 0,
        cache_creation_1h_input_tokens=usage.cache_creation_1h_input_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        estimated=bool(usage and usage.estimated),
    )
    audit = AuditEntry(
        now, ctx.tenant, ctx.key_id, request.request_id, "call", f"agent:{agent.name}", status
    )
    return record, audit


async def _priced(
    events: AsyncGenerator[Event, None], prices: PriceTable
) -> AsyncGenerator[Event, None]:
    """The events with the usage's cost filled in from the answering target's price."""
    target: TargetRef | None = None
    async with aclosing(events) as source:
        async for event in source:
            if isinstance(event, Start):
                target = event.target
            elif isinstance(event, UsageEvent) and target is not None:
                cost = usd(prices.cost_nanos(target, event.usage))
                yield UsageEvent(replace(event.usage, cost_usd=cost))
                continue
            yield event


def _estimate(
    prices: PriceTable, agent: AgentSpec, messages: tuple[Message, ...], max_tokens: int | None
) -> int:
    """An upper estimate of the call's cost: the dearest target of its route, the prompt's
    estimated tokens and every output token it may generate."""
    prompt = (Message(Role.SYSTEM, (TextPart(agent.system_prompt),)), *messages)
    input_tokens = estimate_tokens(prompt) + sum(
        len(str(t.parameters)) // 4 + len(t.description) // 4 for t in agent.tools
    )
    output_tokens = max_tokens or DEFAULT_OUTPUT_ESTIMATE
    return max(
        (prices.estimate_nanos(t.ref, input_tokens, output_tokens) for t in agent.route),
        default=0,
    )


def _nanos(cost_usd: float) -> int:
    return round(cost_usd * NANOS_PER_USD)


def _status(exc: BaseException) -> str:
    if isinstance(exc, SwitchboardError):
        return type(exc).__name__
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "Cancelled"
    return "Internal"
