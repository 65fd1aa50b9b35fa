"""The durable schema, as ordered migrations per SQL dialect.

A migration is applied once, in order, and recorded in ``schema_version``. Add a migration
at the end; never edit one that has shipped.
"""

from __future__ import annotations

from service.state.records import UsageRecord

_V1 = """
CREATE TABLE IF NOT EXISTS sessions (
  tenant TEXT NOT NULL,
  session_id TEXT NOT NULL,
  agent TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  turn_count INTEGER NOT NULL,
  PRIMARY KEY (tenant, session_id)
);
CREATE TABLE IF NOT EXISTS session_turns (
  tenant TEXT NOT NULL,
  session_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  agent TEXT NOT NULL,
  messages TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (tenant, session_id, seq)
);
CREATE TABLE IF NOT EXISTS usage_ledger (
  id {serial},
  at DOUBLE PRECISION NOT NULL,
  tenant TEXT NOT NULL,
  key_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  agent TEXT NOT NULL,
  target TEXT NOT NULL,
  model TEXT NOT NULL,
  input_tokens BIGINT NOT NULL,
  output_tokens BIGINT NOT NULL,
  cost_nanos BIGINT NOT NULL,
  status TEXT NOT NULL,
  latency_ms BIGINT NOT NULL,
  cache_hit BOOLEAN NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_ledger_tenant_at ON usage_ledger (tenant, at);
CREATE TABLE IF NOT EXISTS audit_log (
  id {serial},
  at DOUBLE PRECISION NOT NULL,
  tenant TEXT NOT NULL,
  key_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  action TEXT NOT NULL,
  resource TEXT NOT NULL,
  outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_tenant_at ON audit_log (tenant, at);
"""

# Every usage dimension the providers bill, and whether the counts were estimated.
_V2 = """
ALTER TABLE usage_ledger ADD COLUMN cached_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN cache_creation_5m_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN cache_creation_1h_input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN reasoning_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT FALSE
"""

# Ledger lines and audit entries carry the id their writer gave them, unique, so a line that
# is written again (an outbox replayed after a crash mid-replay) lands once. Idempotency
# records are durable: a retried request id after a cache loss or a restart is answered
# from here, not run (and charged) again.
_V3 = """
ALTER TABLE usage_ledger ADD COLUMN line_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS usage_ledger_line_id ON usage_ledger (line_id);
ALTER TABLE audit_log ADD COLUMN entry_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS audit_log_entry_id ON audit_log (entry_id);
CREATE TABLE IF NOT EXISTS idempotency (
  key TEXT PRIMARY KEY,
  fingerprint TEXT NOT NULL,
  state TEXT NOT NULL,
  result {blob},
  expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_expires_at ON idempotency (expires_at);
"""

# API keys managed through AdminService (service/auth/admin.py). Every write takes the next
# value of the one-row api_key_revision counter in its transaction and stamps the rows it
# changes with it; the counter's row lock makes revisions commit in order, so a replica that
# has read every row up to revision N never misses one below it (service/auth/live.py).
_KEYS = """
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  agents TEXT,
  scopes TEXT NOT NULL,
  note TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  expires_at DOUBLE PRECISION,
  revoked_at DOUBLE PRECISION,
  rotated_from TEXT NOT NULL,
  revision BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_revision ON api_keys (revision);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant, id);
CREATE TABLE IF NOT EXISTS api_key_revision (
  one INTEGER PRIMARY KEY CHECK (one = 1),
  revision BIGINT NOT NULL
);
INSERT INTO api_key_revision (one, revision) VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE INDEX IF NOT EXISTS usage_ledger_at ON usage_ledger (at)
"""

# Runs that can wait, and the approvals they wait for (service/runs, service/approvals).
_RUNS = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  request_id TEXT NOT NULL,
  key_id TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  checkpoint {blob} NOT NULL,
  result {blob} NOT NULL,
  error TEXT NOT NULL,
  owner TEXT NOT NULL,
  lease_until DOUBLE PRECISION NOT NULL,
  steps INTEGER NOT NULL,
  pending TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_tenant ON runs (tenant, created_at, run_id);
CREATE TABLE IF NOT EXISTS approvals (
  approval_id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  run_id TEXT NOT NULL,
  agent TEXT NOT NULL,
  tool TEXT NOT NULL,
  tool_call_id TEXT NOT NULL,
  arguments_json TEXT NOT NULL,
  reason TEXT NOT NULL,
  state TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  expires_at DOUBLE PRECISION NOT NULL,
  request_id TEXT NOT NULL,
  tool_class TEXT NOT NULL,
  step INTEGER NOT NULL,
  decided_at DOUBLE PRECISION NOT NULL,
  approver TEXT NOT NULL,
  comment TEXT NOT NULL,
  edited_arguments_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_tenant ON approvals (tenant, created_at, approval_id);
CREATE INDEX IF NOT EXISTS approvals_run ON approvals (run_id)
"""

# What an audit entry's decision was besides its outcome (AuditEntry.detail): the guards'
# verdicts on a call, as compact JSON.
_AUDIT_DETAIL = """
ALTER TABLE audit_log ADD COLUMN detail TEXT NOT NULL DEFAULT ''
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _KEYS, _RUNS, _AUDIT_DETAIL)

_BLOB = {"sqlite": "BLOB", "postgres": "BYTEA"}
_SERIAL = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgres": "BIGSERIAL PRIMARY KEY",
}


LEDGER_COLUMNS = (
    "at", "tenant", "key_id", "request_id", "agent", "target", "model",
    "input_tokens", "output_tokens", "cost_nanos", "status", "latency_ms", "cache_hit",
    "cached_input_tokens", "cache_creation_5m_input_tokens", "cache_creation_1h_input_tokens",
    "reasoning_tokens", "estimated", "line_id",
)  # fmt: skip
"""The usage ledger's columns in insert order (:func:`ledger_values` gives a line's values)."""


def ledger_values(r: UsageRecord) -> tuple[object, ...]:
    """``r``'s values in :data:`LEDGER_COLUMNS` order."""
    return (
        r.at, r.tenant, r.key_id, r.request_id, r.agent, r.target, r.model,
        r.input_tokens, r.output_tokens, r.cost_nanos, r.status, r.latency_ms, r.cache_hit,
        r.cached_input_tokens, r.cache_creation_5m_input_tokens,
        r.cache_creation_1h_input_tokens, r.reasoning_tokens, r.estimated,
        r.line_id or None,
    )  # fmt: skip


def statements(dialect: str, version: int) -> list[str]:
    """The statements of migration ``version`` (1-based) in ``dialect``."""
    sql = MIGRATIONS[version - 1].format(serial=_SERIAL[dialect], blob=_BLOB[dialect])
    return [s.strip() for s in sql.split(";") if s.strip()]


VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


AUDIT_SELECT = (
    "SELECT at, tenant, key_id, request_id, action, resource, outcome, "
    "coalesce(entry_id, ''), detail FROM audit_log"
)
"""An audit entry's columns in :class:`~service.state.records.AuditEntry` order."""
