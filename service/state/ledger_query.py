"""The usage ledger's totals: one SELECT, built here for both SQL dialects.

A tenant's totals (``UsageLedger.totals``: budgets, GetUsage) and the admin usage report across
tenants (``AdminStore.usage_report``) are the same query: the calls, failed calls, cache hits,
estimated calls and :data:`LEDGER_SUMS` sums of the lines with ``start <= at < end``, of one
tenant or of all, grouped by some of :data:`DIMENSIONS` and, for the report, by time buckets.
Each store runs what :func:`totals_query` builds and reads its rows with
:meth:`TotalsQuery.read`; the dialects differ only in placeholders and the bucket expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.state.records import UsageRow, UsageTotal

Dialect = Literal["sqlite", "postgres"]

DIMENSIONS = ("tenant", "agent", "model", "key_id")
"""What totals can be grouped by, in the order rows are sorted."""

LEDGER_SUMS = (
    "input_tokens", "output_tokens", "cost_nanos", "cached_input_tokens",
    "cache_creation_5m_input_tokens", "cache_creation_1h_input_tokens", "reasoning_tokens",
)  # fmt: skip
"""The columns the query sums, in the order of :func:`total_of`'s sums."""

# The n-th argument (from 1); both dialects let a numbered placeholder appear more than once.
_PLACEHOLDER = {"sqlite": "?{}", "postgres": "${}"}
# The start of ``at``'s bucket (SQLite has no floor() unless built with its math functions).
_BUCKET = {"sqlite": "(CAST(at / {0} AS INTEGER) * {0})", "postgres": "(floor(at / {0}) * {0})"}


@dataclass(frozen=True, slots=True)
class TotalsQuery:
    """A SELECT, its arguments (in placeholder order) and the dimensions it groups by."""

    sql: str
    args: tuple[object, ...]
    dims: tuple[str, ...]

    def read(self, rows: Iterable[Sequence[Any]]) -> list[UsageRow]:
        """The groups in the query's ``rows``; an empty total (no lines) is left out."""
        out = []
        n = len(self.dims)
        for row in rows:
            labels = dict(zip(self.dims, row[1 : 1 + n], strict=True))
            values = [int(v or 0) for v in row[1 + n :]]
            if values[0]:
                totals = total_of(labels, values[:4], values[4:])
                out.append(UsageRow(float(row[0]), labels.get("tenant", ""), totals))
        return out


def totals_query(  # noqa: PLR0917 (the query's inputs)
    dialect: Dialect,
    start: float,
    end: float,
    group_by: Sequence[str],
    tenant: str | None = None,
    bucket_s: float | None = None,
) -> TotalsQuery:
    """The totals of the lines with ``start <= at < end`` (of ``tenant``, else of all),
    grouped by ``group_by`` (of :data:`DIMENSIONS`; others are ignored) and, with
    ``bucket_s``, by buckets aligned to multiples of it since the epoch; each row starts
    with its bucket's start (else ``start``), ordered by bucket, then the dimensions."""
    args: list[object] = []

    def param(value: object) -> str:
        args.append(value)
        return _PLACEHOLDER[dialect].format(len(args))

    since, until = param(start), param(end)
    where = f"at >= {since} AND at < {until}"
    if tenant is not None:
        where += f" AND tenant = {param(tenant)}"
    bucket = None if bucket_s is None else _BUCKET[dialect].format(param(bucket_s))
    dims = tuple(d for d in DIMENSIONS if d in group_by)
    keys = ", ".join(([bucket] if bucket else []) + list(dims))
    # PostgreSQL cannot tell a bare parameter's type in a select list: cast it.
    select = ", ".join([bucket or f"CAST({since} AS DOUBLE PRECISION)", *dims])
    sums = ", ".join(f"sum({column})" for column in LEDGER_SUMS)
    sql = (
        f"SELECT {select}, count(*), "  # noqa: S608 (dimensions from a whitelist)
        "sum(CASE WHEN status <> 'ok' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN cache_hit THEN 1 ELSE 0 END), "
        f"sum(CASE WHEN estimated THEN 1 ELSE 0 END), {sums} "
        f"FROM usage_ledger WHERE {where}" + (f" GROUP BY {keys} ORDER BY {keys}" if keys else "")
    )
    return TotalsQuery(sql, tuple(args), dims)


def total_of(labels: dict[str, str], counts: Sequence[int], sums: Sequence[int]) -> UsageTotal:
    """A group's totals from its labels, its (calls, failed, cache hits, estimated) counts and
    its :data:`LEDGER_SUMS` sums."""
    calls, failed, hits, estimated = counts
    inp, out, cost, cached, write_5m, write_1h, reasoning = sums
    return UsageTotal(
        agent=labels.get("agent", ""),
        model=labels.get("model", ""),
        key_id=labels.get("key_id", ""),
        calls=calls,
        failed_calls=failed,
        cache_hits=hits,
        input_tokens=inp,
        output_tokens=out,
        cost_nanos=cost,
        cached_input_tokens=cached,
        cache_creation_5m_input_tokens=write_5m,
        cache_creation_1h_input_tokens=write_1h,
        reasoning_tokens=reasoning,
        estimated_calls=estimated,
    )
