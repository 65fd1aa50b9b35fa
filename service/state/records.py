"""The values stores keep: plain frozen records, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A stored conversation, without its turns."""

    session_id: str
    agent: str
    created_at: float  # unix seconds
    updated_at: float
    turn_count: int


@dataclass(frozen=True, slots=True)
class Turn:
    """One exchange appended after a successful answer: the request's messages and the
    answer, as the session codec's JSON text."""

    seq: int
    agent: str
    messages_json: str
    created_at: float


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One line of the usage ledger: every call, answered or not."""

    at: float  # unix seconds: when the call's budgets were bound, else when it was recorded
    tenant: str
    key_id: str
    request_id: str
    agent: str
    target: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    status: str  # "ok" or the error kind, e.g. "Unavailable"
    latency_ms: int
    cache_hit: bool
    # Parts of input_tokens and output_tokens (see service.domain.Usage).
    cached_input_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False  # the upstream reported no usage: the counts are estimates
    # Unique per line (given by the writer): a line written twice (an outbox replay) lands
    # once. Empty for lines that need no such guard.
    line_id: str = ""
    # The budget lines the call was charged on, as its reservation bound them: (line key,
    # when the line's counters go, unix seconds); not in the ledger, kept with the line while
    # it waits in an outbox (service.usage.budgets). None: a line written before they were
    # named.
    budget_lines: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Totals of the ledger lines of one group (empty strings for dimensions not grouped)."""

    agent: str
    model: str
    key_id: str
    calls: int
    failed_calls: int
    cache_hits: int
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    cached_input_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_calls: int = 0


GROUP_DIMENSIONS = ("agent", "model", "key_id")


@dataclass(frozen=True, slots=True)
class UsageRow:
    """The totals of one group in one time bucket (empty strings: not grouped by it)."""

    bucket_start: float  # unix seconds; the range's start when not bucketed
    tenant: str
    totals: UsageTotal


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who called what, and the outcome. No prompt text.

    ``detail`` is a compact JSON object with what else was decided, or "": for an agent call,
    ``{"guards": [[guard, stage, category, action, count], ...]}`` (the guards' verdicts:
    categories and counts, never the matched text)."""

    at: float
    tenant: str
    key_id: str
    request_id: str
    action: str  # e.g. "Invoke", "Stream", "DeleteSession"
    resource: str  # e.g. the agent or session id
    outcome: str  # "ok" or the error kind
    entry_id: str = ""  # unique per entry, like UsageRecord.line_id
    detail: str = ""


# What BudgetStore.reserve returns when its counters must be rebuilt from the ledger first;
# and, at most WAIT, while a new epoch's rebuild time runs (WAIT - result: ms to wait).
NEEDS_SEED = -2
WAIT = -3


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget a call is charged against: its store key and limit."""

    key: str
    limit_nanos: int
    ttl_s: float  # how long the period's counters are kept


@dataclass(frozen=True, slots=True)
class Claim:
    """An idempotency key's state: ``new`` (the caller now owns it), ``pending`` (another
    call owns it) or ``done`` (``result`` is the recorded answer)."""

    state: str
    fingerprint: str = ""
    result: bytes | None = None
