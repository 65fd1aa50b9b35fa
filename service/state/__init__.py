"""State stores: interfaces, and embedded (SQLite + memory) and shared (PostgreSQL + Redis)
backends."""

from service.state.build import build_stores, data_dir
from service.state.records import (
    AuditEntry,
    BudgetLine,
    Claim,
    SessionInfo,
    Turn,
    UsageRecord,
    UsageTotal,
)
from service.state.stores import Durable, Fast, Stores

__all__ = [
    "AuditEntry",
    "BudgetLine",
    "Claim",
    "Durable",
    "Fast",
    "SessionInfo",
    "Stores",
    "Turn",
    "UsageRecord",
    "UsageTotal",
    "build_stores",
    "data_dir",
]
