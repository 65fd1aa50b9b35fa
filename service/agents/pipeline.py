"""The stateful steps around routing one agent call, in order:

1. load the session's history (if the request names a session; a session belongs to the
   agent that created it: another agent's is FAILED_PRECONDITION);
2. reserve an upper bound of the call's cost on the caller's budgets
   (:mod:`service.usage.bound`), and of each attempt past the first before it starts;
3. serve from the response cache (single-flight) or route upstream, pricing the usage;
4. on Finish, before the caller sees it: record the call (ledger line and audit entry,
   together with the session's new turn, if any, in one transaction), then settle the
   reservation to the real cost;
5. a call that ends without its Finish (failed, cancelled by its caller, past its deadline,
   cut off by a drain or by the upstream) appends nothing and is recorded with its error
   kind, charged for what reached the upstream: the usage the upstream reported, or, when
   it reported none, an estimate of the prompt sent and the answer delivered
   (:mod:`service.usage.estimate`); its reservation is settled to that.

Every call is also charged for its attempts given up after they began answering (an Invoke
retried or sent to the fallback mid-answer, a hedge that lost, a whole answer cut short by the
caller): the router writes them into the call's :class:`~service.routing.tab.Tab`, and each is
priced at its own target's price. The call's ledger line carries the sum (tokens and cost);
its target and model are those of the answer (or of the last attempt, when none answered).

Recording and settling run to their end even when the call is cancelled
(:class:`~service.usage.recorder.Recorder`). A line the durable store cannot take goes to the
local outbox (:class:`~service.usage.ledger.Ledger`). A session append that fails fails the
call (the turn would silently be lost); the call is then recorded with that error.
The charged tokens are told to the rate limiter through the call's meter, and a session's
history is reserved on it (an upper bound, like the request's) before the call goes upstream.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import asdict, replace
from typing import Protocol

from service.agents.spec import AgentSpec
from service.agents.tally import Tally, priced
from service.cache import ResponseCache, cache_key, wanted
from service.config.state_model import BudgetConfig
from service.context import current
from service.deadline import Deadline
from service.domain import (
    AgentRequest,
    Event,
    Finish,
    FinishReason,
    GuardVerdict,
    Message,
    Parameters,
    Start,
    Tool,
    UsageEvent,
)
from service.errors import InvalidArgument, SwitchboardError
from service.guards import merge_verdicts
from service.providers.base import TargetSpec
from service.routing.tab import Tab, total
from service.sessions import Sessions
from service.state.records import AuditEntry, UsageRecord
from service.state.stores import Stores
from service.usage.bound import attempts_at_once, history_bound, output_bound, tools_bound
from service.usage.budgets import Budgets, Reservation, binding
from service.usage.ledger import Ledger
from service.usage.meter import charge
from service.usage.meter import reserve as reserve_tokens
from service.usage.pricing import PriceTable
from service.usage.recorder import Recorder

log = logging.getLogger(__name__)

Route = Callable[[tuple[Message, ...], Deadline, Tab], AsyncGenerator[Event, None]]
"""``route(history, deadline, tab)``: the call's events from upstream; attempts given up after
they cost something are written into ``tab`` as they happen (see ``Router.open``)."""


class Pipeline(Protocol):
    def run(
        self,
        request: AgentRequest,
        agent: AgentSpec,
        route: Route,
        deadline: Deadline,
        verdicts: tuple[GuardVerdict, ...] = (),
    ) -> AsyncGenerator[Event, None]:
        """The call's events; ``route(history, deadline, tab)`` produces them upstream
        (and writes the attempts it gave up into ``tab``). ``verdicts``: the input guards'
        (they join the Finish's, and the call's records)."""
        ...

    async def refuse(
        self,
        request: AgentRequest,
        agent: AgentSpec,
        verdicts: tuple[GuardVerdict, ...],
        refusal: SwitchboardError,
    ) -> None:
        """Record a call a guard refused before it began (its audit entry, durably)."""
        ...


class Stateless:
    """No state: route the request as it is."""

    async def run(
        self,
        request: AgentRequest,
        agent: AgentSpec,
        route: Route,
        deadline: Deadline,
        verdicts: tuple[GuardVerdict, ...] = (),
    ) -> AsyncGenerator[Event, None]:
        async with aclosing(route((), deadline, Tab())) as events:
            async for event in events:
                if not (isinstance(event, UsageEvent) and event.partial):  # not the caller's
                    yield with_verdicts(event, verdicts)

    async def refuse(
        self,
        request: AgentRequest,
        agent: AgentSpec,
        verdicts: tuple[GuardVerdict, ...],
        refusal: SwitchboardError,
    ) -> None:
        pass  # no durable store: the call log line is the record


def with_verdicts(event: Event, verdicts: tuple[GuardVerdict, ...]) -> Event:
    """``event``, a Finish with the input guards' ``verdicts`` joined to its own."""
    if verdicts and isinstance(event, Finish):
        return replace(event, verdicts=merge_verdicts(verdicts, event.verdicts))
    return event


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
        budget_rebuild_s: float = 0.0,
        on_cache_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``budget_rebuild_s``: how long lost budget counters admit nothing while every
        process holds again what is in flight (:mod:`service.usage.budgets`); the owner
        runs ``budgets.start()`` and ``budgets.aclose()``."""
        self._sessions = Sessions(stores.durable)
        self.budgets = Budgets(
            stores.fast,
            hold_s=reservation_ttl_s,
            books=ledger,
            configs=budgets,
            rebuild_s=budget_rebuild_s,
        )
        ledger.on_landed = self.budgets.landed
        self.recorder = Recorder(ledger, self.budgets)
        self.cache = ResponseCache(stores.fast, on_cache_lookup)
        self._pricing = pricing
        self._budget_configs = budgets

    async def run(
        self,
        request: AgentRequest,
        agent: AgentSpec,
        route: Route,
        deadline: Deadline,
        verdicts: tuple[GuardVerdict, ...] = (),
    ) -> AsyncGenerator[Event, None]:
        ctx = current()
        began = time.monotonic()
        prices = self._pricing()
        reservation: Reservation | None = None
        call = Tally(verdicts)
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
            call.prompt, earlier, sent = _sending(agent, history, request)
            await reserve_tokens(earlier)  # tokens-per-minute: still a bound
            reservation = await self.budgets.reserve(
                self._budget_configs(),
                ctx.tenant,
                ctx.key_id,
                reservation_bound(prices, agent, sent, parameters.max_tokens),
                wait_s=deadline.remaining(),
            )
            call.tab.allow = functools.partial(
                type(self)._another_attempt,  # the function: no bound method held per call
                self,
                reservation,
                prices,
                agent,
                sent,
                parameters.max_tokens,
            )
            # Uncached, priced in the loop below: one generator fewer held by every call
            # while it streams.
            source = (
                self._cached(request, agent, history, (parameters, deadline), route, call, prices)
                if use_cache
                else route(history, deadline, call.tab)
            )
            try:  # as aclosing would, without the object held (docs/benchmarks.md, Memory)
                async for routed in source:
                    event = routed if use_cache else call.priced(routed, prices)
                    if event is None:
                        continue
                    event = with_verdicts(event, verdicts)
                    call.add(event)
                    if isinstance(event, UsageEvent) and call.tab.abandoned:
                        event = call.billed(event, prices)  # what the caller pays
                    if isinstance(event, Finish):
                        # Recorded, then settled, before the caller sees the Finish.
                        usage, audit = _records(request, agent, call, "ok", began, prices,
                                                reservation)  # fmt: skip
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
            finally:
                await source.aclose()
        except BaseException as exc:
            status = _status(exc)
            raise
        finally:
            if not call.recorded:
                # Ended without its Finish (failed, cancelled, cut off, drained): charged for
                # what reached the upstream, so budgets and limits count it too.
                usage, audit = _records(request, agent, call, status, began, prices, reservation)
                charge(usage.input_tokens + usage.output_tokens)
                await self._record_quietly(usage, audit, reservation)

    def _cached(  # noqa: PLR0917 (one call's facts)
        self,
        request: AgentRequest,
        agent: AgentSpec,
        history: tuple[Message, ...],
        sent: tuple[Parameters, Deadline],
        route: Route,
        call: Tally,
        prices: PriceTable,
    ) -> AsyncGenerator[Event, None]:
        """The answer through the response cache (single-flight): a replay, or the routed
        events (priced), kept for the next caller. (The closure that routes is made here,
        not in ``run``: its variables would be cells held by every call's frame.)"""
        parameters, deadline = sent
        key = cache_key(current().tenant, agent, call.prompt[1], parameters, request.tools)
        opening = Start(request.request_id, agent.name, agent.version, agent.route[0].ref)

        def produce() -> AsyncGenerator[Event, None]:
            return priced(route(history, deadline, call.tab), prices, call)

        return self.cache.serve(key, agent.cache.ttl_s, opening, produce, deadline)

    async def _another_attempt(  # noqa: PLR0917 (bound in run, the target last)
        self,
        reservation: Reservation | None,
        prices: PriceTable,
        agent: AgentSpec,
        sent: int,
        max_tokens: int | None,
        target: TargetSpec,
    ) -> bool:
        """What the router asks before an attempt past the first: reserve its bound on the
        call's tokens-per-minute limits and budgets; False when one has no room. (A partial
        of it, not a closure: every call holds it while it streams, few use it.)"""
        at_once = attempts_at_once(agent)
        most = output_bound(target.model, max_tokens)
        try:
            await reserve_tokens((sent + most) * at_once)
        except SwitchboardError:
            return False
        if reservation is None:
            return True
        amount = prices.estimate_nanos(target.ref, sent, most) * at_once
        return await self.budgets.grow(reservation, amount)

    def _appender(
        self, request: AgentRequest, call: Tally, usage: UsageRecord, audit: AuditEntry
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

    async def refuse(
        self,
        request: AgentRequest,
        agent: AgentSpec,
        verdicts: tuple[GuardVerdict, ...],
        refusal: SwitchboardError,
    ) -> None:
        """The refused call's audit entry, durable (or in the outbox) before the caller is
        told. No ledger line: nothing was sent upstream, nothing is charged."""
        ctx = current()
        entry = AuditEntry(
            time.time(), ctx.tenant, ctx.key_id, request.request_id, "call",
            f"agent:{agent.name}", type(refusal).__name__,
            entry_id=secrets.token_hex(16), detail=audit_detail(verdicts),
        )  # fmt: skip
        await self.recorder.audit(entry)

    async def _record_quietly(
        self, usage: UsageRecord, audit: AuditEntry, reservation: Reservation | None
    ) -> None:
        try:
            await self.recorder.record(usage, audit, reservation)
        except SwitchboardError as exc:
            log.exception("usage ledger write failed (store and outbox): %s", exc.message)


def _records(  # noqa: PLR0917 (one call's facts)
    request: AgentRequest,
    agent: AgentSpec,
    call: Tally,
    status: str,
    began: float,
    prices: PriceTable,
    reservation: Reservation | None,
) -> tuple[UsageRecord, AuditEntry]:
    """The call's ledger line (charged where ``reservation`` was made) and audit entry."""
    ctx = current()
    now = time.time()
    start, finish = call.start, call.finish
    own = call.usage()
    answering = (finish.target if finish else None) or (start.target if start else None)
    cache_hit = bool(finish and finish.cache_hit)
    cost = 0 if cache_hit or answering is None else prices.cost_nanos(answering, own)
    cost += call.spent_nanos(prices)
    usage = total((own, call.tab.usage())) if call.tab.abandoned else own
    target = answering or (call.tab.abandoned[-1].target if call.tab.abandoned else None)
    at, budget_lines = binding(reservation, now)  # charged where the reservation was made
    record = UsageRecord(
        at=at,
        tenant=ctx.tenant,
        key_id=ctx.key_id,
        request_id=request.request_id,
        agent=agent.name,
        target=target.name if target else "",
        model=target.model if target else "",
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_nanos=cost,
        status=status,
        latency_ms=round((time.monotonic() - began) * 1000),
        cache_hit=cache_hit,
        cached_input_tokens=usage.cached_input_tokens,
        cache_creation_5m_input_tokens=usage.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens=usage.cache_creation_1h_input_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        estimated=usage.estimated,
        line_id=secrets.token_hex(16),  # 32 hex digits, as uuid4().hex but cheaper
        budget_lines=budget_lines,
    )
    # An answer a guard (or the provider's filter) stopped is answered, and charged, but the
    # audit says so: outcome "content_filter", not "ok".
    filtered = status == "ok" and finish and finish.reason is FinishReason.CONTENT_FILTER
    audit = AuditEntry(
        now, ctx.tenant, ctx.key_id, request.request_id, "call", f"agent:{agent.name}",
        "content_filter" if filtered else status, entry_id=secrets.token_hex(16),
        detail=audit_detail(finish.verdicts if finish else call.verdicts),
    )  # fmt: skip
    return record, audit


def audit_detail(verdicts: Sequence[GuardVerdict]) -> str:
    """An audit entry's ``detail`` for a call's guard verdicts (categories and counts, never
    the matched text): ``{"guards": [{"guard", "stage", "category", "action", "count"}]}``,
    or "" when there are none."""
    if not verdicts:
        return ""
    return json.dumps({"guards": [asdict(v) for v in verdicts]}, separators=(",", ":"))


def _sending(
    agent: AgentSpec, history: tuple[Message, ...], request: AgentRequest
) -> tuple[tuple[str, tuple[Message, ...], tuple[Tool, ...]], int, int]:
    """What the call sends, and the bounds of its history's and of all its input tokens."""
    earlier = history_bound(history)
    sent = agent.input_tokens + earlier + history_bound(request.messages)
    prompt = (agent.system_prompt, history + request.messages, agent.tools + request.tools)
    return prompt, earlier, sent + tools_bound(request.tools)


def reservation_bound(
    prices: PriceTable,
    agent: AgentSpec,
    input_tokens: int,
    max_tokens: int | None,
) -> int:
    """An upper bound of the call's first attempt (and its hedge) in nano-dollars: the bound
    of its input and output tokens (:mod:`service.usage.bound`) at the dearest target of its
    route. An attempt past the first reserves its own before it starts."""
    each = [prices.estimate_nanos(t.ref, input_tokens, output_bound(t.model, max_tokens))
            for t in agent.route]  # fmt: skip
    return max(each, default=0) * attempts_at_once(agent)


def _status(exc: BaseException) -> str:
    if isinstance(exc, SwitchboardError):
        return type(exc).__name__
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "Cancelled"
    return "Internal"
