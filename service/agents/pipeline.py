"""The stateful steps around routing one agent call, in order:

1. load the session's history (if the request names a session; a session belongs to the
   agent that created it: another agent's is FAILED_PRECONDITION);
2. reserve an upper bound of the call's cost on the caller's budgets
   (:mod:`service.usage.bound`);
3. serve from the response cache (single-flight) or route upstream, pricing the usage;
4. on Finish, before the caller sees it: record the call (ledger line and audit entry,
   together with the session's new turn, if any, in one transaction), then settle the
   reservation to the real cost;
5. a call that ends without its Finish (failed, cancelled by its caller, past its deadline,
   cut off by a drain or by the upstream) appends nothing and is recorded with its error
   kind, charged for what reached the upstream: the usage the upstream reported, or, when
   it reported none, an estimate of the prompt sent and the answer delivered
   (:mod:`service.usage.estimate`); its reservation is settled to that.

Recording and settling run to their end even when the call is cancelled
(:class:`~service.usage.recorder.Recorder`). A line the durable store cannot take goes to the
local outbox (:class:`~service.usage.ledger.Ledger`). A session append that fails fails the
call (the turn would silently be lost); the call is then recorded with that error.
The charged tokens are told to the rate limiter through the call's meter.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
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
    Start,
    TargetRef,
    Tool,
    Usage,
    UsageEvent,
)
from service.errors import InvalidArgument, SwitchboardError
from service.routing.whole import Abandoned, total
from service.sessions import Sessions
from service.state.records import AuditEntry, UsageRecord
from service.state.stores import Stores
from service.usage.bound import input_bound, output_bound
from service.usage.budgets import Budgets, Reservation
from service.usage.estimate import AnswerCounter, estimated_usage, prompt_tokens
from service.usage.ledger import Ledger
from service.usage.meter import charge
from service.usage.pricing import PriceTable, usd
from service.usage.recorder import Recorder

log = logging.getLogger(__name__)

Route = Callable[[tuple[Message, ...], Deadline, list[Abandoned]], AsyncGenerator[Event, None]]
"""``route(history, deadline, spent)``: the call's events from upstream; attempts given up
after they cost something are appended to ``spent`` as they happen (see ``Router.open``)."""


class Pipeline(Protocol):
    def run(
        self, request: AgentRequest, agent: AgentSpec, route: Route, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        """The call's events; ``route(history, deadline, spent)`` produces them upstream."""
        ...


class Stateless:
    """No state: route the request as it is."""

    async def run(
        self, request: AgentRequest, agent: AgentSpec, route: Route, deadline: Deadline
    ) -> AsyncGenerator[Event, None]:
        async with aclosing(route((), deadline, [])) as events:
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
        ledger: Ledger,
        on_cache_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._sessions = Sessions(stores.durable)
        self._budgets = Budgets(stores.fast, hold_s=reservation_ttl_s, ledger=ledger)
        self.recorder = Recorder(ledger, self._budgets)
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
        call = _Call()
        status = "ok"
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
            call.prompt = (agent.system_prompt, messages, agent.tools + request.tools)
            reservation = await self._budgets.reserve(
                self._budget_configs(),
                ctx.tenant,
                ctx.key_id,
                reservation_bound(prices, agent, call.prompt, parameters.max_tokens),
            )

            def produce() -> AsyncGenerator[Event, None]:
                return _priced(route(history, deadline, call.spent), prices, call)

            if use_cache:
                key = cache_key(ctx.tenant, agent, messages, parameters, request.tools)
                opening = Start(request.request_id, agent.name, agent.version, agent.route[0].ref)
                source = self.cache.serve(key, agent.cache.ttl_s, opening, produce, deadline)
            else:
                source = produce()
            async with aclosing(source) as events:
                async for event in events:
                    call.add(event)
                    if isinstance(event, Finish):
                        # Recorded, then settled, before the caller sees the Finish.
                        usage, audit = _records(request, agent, call, "ok", began, prices)
                        charge(usage.input_tokens + usage.output_tokens)
                        # Marked before the await: a caller that leaves while the (shielded)
                        # write runs must not have the call recorded and settled twice.
                        settling, reservation, call.recorded = reservation, None, True
                        try:
                            await self.recorder.record(
                                usage,
                                audit,
                                settling,
                                write=self._appender(request, call, usage, audit),
                            )
                        except Exception:  # the turn's append failed: nothing was written
                            reservation, call.recorded = settling, False
                            raise
                    yield event
        except BaseException as exc:
            status = _status(exc)
            raise
        finally:
            if not call.recorded:
                # Ended without its Finish (failed, cancelled, cut off, drained): charged for
                # what reached the upstream, so budgets and limits count it too.
                usage, audit = _records(request, agent, call, status, began, prices)
                charge(usage.input_tokens + usage.output_tokens)
                await self._record_quietly(usage, audit, reservation)

    def _appender(
        self, request: AgentRequest, call: _Call, usage: UsageRecord, audit: AuditEntry
    ) -> Callable[[], Awaitable[None]] | None:
        """With a session: append the turn with the line and entry in one commit (raises
        if the append fails: the turn must not be lost silently)."""
        if not request.session_id:
            return None

        async def append() -> None:
            await self._sessions.append(
                usage.tenant,
                request.session_id,
                usage.agent,
                request.messages,
                call.fold.result().message,
                usage=usage,
                audit=audit,
            )

        return append

    async def _record_quietly(
        self, usage: UsageRecord, audit: AuditEntry, reservation: Reservation | None
    ) -> None:
        try:
            await self.recorder.record(usage, audit, reservation)
        except SwitchboardError as exc:
            log.exception("usage ledger write failed (store and outbox): %s", exc.message)


class _Call:
    """What one call saw: its events folded, whether the upstream answered, what it sent."""

    __slots__ = ("answered", "counter", "finish", "fold", "prompt", "recorded", "spent", "start")

    def __init__(self) -> None:
        self.fold = Fold()
        self.counter = AnswerCounter()
        self.start: Start | None = None
        self.finish: Finish | None = None
        self.answered = False  # an upstream began answering (not a cache replay)
        self.recorded = False
        self.prompt: tuple[str, tuple[Message, ...], tuple[Tool, ...]] = ("", (), ())
        # Attempts of a whole call given up after they cost something (the router adds
        # them as they happen): what a call cancelled before its answer is charged.
        self.spent: list[Abandoned] = []

    def add(self, event: Event) -> None:
        self.fold.add(event)
        self.counter.add(event)
        if isinstance(event, Start):
            self.start = event
        elif isinstance(event, Finish):
            self.finish = event

    def usage(self) -> Usage:
        """The usage to charge: the upstream's report; else, when an upstream answered but
        never reported (the call ended early), an estimate of the prompt sent and the
        answer delivered; else what the attempts given up before the answer cost (a whole
        call cancelled while the router read them); else none."""
        reported = self.fold.usage
        if reported.input_tokens or reported.output_tokens:
            return reported
        if not self.answered:
            return total(a.usage for a in self.spent) if self.spent else reported
        system, messages, tools = self.prompt
        return estimated_usage(prompt_tokens(system, messages, tools), self.counter.tokens)


def _records(  # noqa: PLR0917 (one call's facts)
    request: AgentRequest,
    agent: AgentSpec,
    call: _Call,
    status: str,
    began: float,
    prices: PriceTable,
) -> tuple[UsageRecord, AuditEntry]:
    """The call's ledger line and audit entry."""
    ctx = current()
    now = time.time()
    start, finish = call.start, call.finish
    usage = call.usage()
    target = (finish.target if finish else None) or (start.target if start else None)
    if target is None and call.spent:
        target = call.spent[-1].target
    model = target.model if target else ""
    cache_hit = bool(finish and finish.cache_hit)
    record = UsageRecord(
        at=now,
        tenant=ctx.tenant,
        key_id=ctx.key_id,
        request_id=request.request_id,
        agent=agent.name,
        target=target.name if target else "",
        model=model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_nanos=0 if cache_hit or target is None else prices.cost_nanos(target, usage),
        status=status,
        latency_ms=round((time.monotonic() - began) * 1000),
        cache_hit=cache_hit,
        cached_input_tokens=usage.cached_input_tokens,
        cache_creation_5m_input_tokens=usage.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens=usage.cache_creation_1h_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        estimated=usage.estimated,
        line_id=secrets.token_hex(16),  # 32 hex digits, as uuid4().hex but cheaper
    )
    audit = AuditEntry(
        now, ctx.tenant, ctx.key_id, request.request_id, "call", f"agent:{agent.name}", status,
        entry_id=secrets.token_hex(16),
    )  # fmt: skip
    return record, audit


async def _priced(
    events: AsyncGenerator[Event, None], prices: PriceTable, call: _Call
) -> AsyncGenerator[Event, None]:
    """The events with the usage's cost filled in from the answering target's price; marks
    ``call.answered`` when an upstream begins its answer."""
    target: TargetRef | None = None
    async with aclosing(events) as source:
        async for event in source:
            if isinstance(event, Start):
                target = event.target
                call.answered = True
            elif isinstance(event, UsageEvent) and target is not None:
                cost = usd(prices.cost_nanos(target, event.usage))
                yield UsageEvent(replace(event.usage, cost_usd=cost))
                continue
            yield event


def reservation_bound(
    prices: PriceTable,
    agent: AgentSpec,
    prompt: tuple[str, tuple[Message, ...], tuple[Tool, ...]],
    max_tokens: int | None,
) -> int:
    """An upper bound of the call's cost in nano-dollars: the bound of its input and output
    tokens (:mod:`service.usage.bound`) at the dearest target of its route."""
    input_tokens = input_bound(*prompt)
    return max(
        (
            prices.estimate_nanos(t.ref, input_tokens, output_bound(t.model, max_tokens))
            for t in agent.route
        ),
        default=0,
    )


def _status(exc: BaseException) -> str:
    if isinstance(exc, SwitchboardError):
        return type(exc).__name__
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "Cancelled"
    return "Internal"
