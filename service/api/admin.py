"""AdminService: keys as a service, and what an operator looks at across tenants (usage and
cost over time, recent calls, targets). The auth layer lets only keys with the ``admin`` scope
in (:mod:`service.auth.scopes`); the work is :class:`service.auth.admin.KeyAdmin`'s and the
admin store's, so ``switchboard keys`` does exactly what these methods do."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from switchboard.v1 import admin_pb2 as pb
from switchboard.v1 import admin_pb2_grpc as pb_grpc
from switchboard.v1 import usage_pb2

from service.api.errors import abort
from service.api.structs import duration, timestamp, timestamp_seconds
from service.api.usage import usage_group
from service.auth.admin import DEFAULT_GRACE_S, Actor, KeyAdmin
from service.auth.keys import ApiKey
from service.context import current
from service.errors import FieldViolation, InvalidArgument
from service.providers.base import TargetSpec
from service.routing.registry import TargetRegistry
from service.state.admin_store import AdminStore, RecentCall
from service.state.records import UsageRow
from service.usage.pricing import usd

Context = grpc.aio.ServicerContext[object, object]

DEFAULT_PAGE, MAX_PAGE = 100, 1000
DEFAULT_CALLS, MAX_CALLS = 50, 500
MIN_INTERVAL_S, MAX_BUCKETS = 60.0, 1000
DAY_S = 86400.0
_DIMENSIONS = {
    usage_pb2.USAGE_DIMENSION_TENANT: "tenant",
    usage_pb2.USAGE_DIMENSION_AGENT: "agent",
    usage_pb2.USAGE_DIMENSION_MODEL: "model",
    usage_pb2.USAGE_DIMENSION_KEY: "key_id",
}
_SOURCES = {"store": pb.KEY_SOURCE_STORE, "file": pb.KEY_SOURCE_FILE, "env": pb.KEY_SOURCE_ENV}
_BREAKER = {
    "closed": pb.BREAKER_STATE_CLOSED,
    "open": pb.BREAKER_STATE_OPEN,
    "half-open": pb.BREAKER_STATE_HALF_OPEN,
}


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """A configured target as this replica sees it."""

    name: str
    provider: str
    model: str
    breaker_state: str  # closed, open, half-open
    failure_count: int
    cooldown_s: float
    last_error: str


def target_infos(specs: Mapping[str, TargetSpec], registry: TargetRegistry) -> list[TargetInfo]:
    """The configured targets and their breakers, ordered by name."""
    out = []
    for name, spec in sorted(specs.items()):
        breaker = registry.get(name).breaker
        cause = breaker.cause
        out.append(
            TargetInfo(
                name=name,
                provider=spec.provider,
                model=spec.model,
                breaker_state=breaker.state,
                failure_count=breaker.fail_counter,
                cooldown_s=breaker.cooldown_left(),
                last_error="" if cause is None else cause.message,
            )
        )
    return out


def key_message(record: ApiKey, now: float) -> pb.ApiKey:
    """``record`` as the contract's ApiKey (never a hash or secret)."""
    message = pb.ApiKey(
        key_id=record.id,
        tenant=record.tenant,
        agents=sorted(record.agents or ()),
        scopes=sorted(record.scopes),
        note=record.note,
        create_time=timestamp(record.created_at),
        source=_SOURCES.get(record.source, pb.KEY_SOURCE_UNSPECIFIED),
        rotated_from=record.rotated_from,
    )
    if record.expires_at is not None:
        message.expire_time.CopyFrom(timestamp(record.expires_at))
    if record.revoked_at is not None:
        message.revoke_time.CopyFrom(timestamp(record.revoked_at))
    if record.revoked_at is not None:
        message.state = pb.KEY_STATE_REVOKED
    elif record.active(now):
        message.state = pb.KEY_STATE_ACTIVE
    else:
        message.state = pb.KEY_STATE_EXPIRED
    return message


def _row(row: UsageRow) -> pb.UsageReportRow:
    return pb.UsageReportRow(
        bucket_start_time=timestamp(row.bucket_start),
        tenant=row.tenant,
        usage=usage_group(row.totals),
    )


def _call(call: RecentCall) -> pb.RecentCall:
    return pb.RecentCall(
        time=timestamp(call.at),
        tenant=call.tenant,
        key_id=call.key_id,
        request_id=call.request_id,
        agent=call.agent,
        target=call.target,
        model=call.model,
        status=call.status,
        latency=duration(call.latency_ms / 1000),
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost_usd=usd(call.cost_nanos),
        cache_hit=call.cache_hit,
    )


def _page_size(value: int, default: int, most: int, violations: list[FieldViolation]) -> int:
    if value < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    return min(value or default, most)


def _raise_first(violations: Sequence[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(f"{violations[0].field}: {violations[0].description}", violations)


class AdminServicer(pb_grpc.AdminServiceServicer):
    def __init__(
        self,
        keys: KeyAdmin,
        store: AdminStore,
        targets: Callable[[], list[TargetInfo]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._store = store
        self._targets = targets
        self._clock = clock

    @staticmethod
    def _actor() -> Actor:
        call = current()
        return Actor(key_id=call.key_id or "auth-off", request_id=call.request_id)

    async def CreateKey(  # noqa: N802
        self, request: pb.CreateKeyRequest, context: Context
    ) -> pb.CreateKeyResponse:
        try:
            violations: list[FieldViolation] = []
            expires = None
            if request.HasField("expire_time"):
                expires = timestamp_seconds(request.expire_time, "expire_time", violations)
            _raise_first(violations)
            secret, record = await self._keys.create(
                self._actor(),
                request.tenant,
                agents=list(request.agents),
                scopes=list(request.scopes),
                note=request.note,
                expires_at=expires,
            )
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return pb.CreateKeyResponse(key=key_message(record, self._clock()), secret=secret)

    async def GetKey(self, request: pb.GetKeyRequest, context: Context) -> pb.GetKeyResponse:  # noqa: N802
        try:
            record = await self._keys.get(request.key_id)
        except Exception as exc:
            await abort(context, exc)
            raise
        return pb.GetKeyResponse(key=key_message(record, self._clock()))

    async def ListKeys(  # noqa: N802
        self, request: pb.ListKeysRequest, context: Context
    ) -> pb.ListKeysResponse:
        try:
            violations: list[FieldViolation] = []
            size = _page_size(request.page_size, DEFAULT_PAGE, MAX_PAGE, violations)
            _raise_first(violations)
            found = await self._keys.list(
                request.tenant or None,
                request.page_token,
                size + 1,
                include_revoked=request.show_revoked,
            )
        except Exception as exc:
            await abort(context, exc)
            raise
        now = self._clock()
        page = found[:size]
        token = page[-1].id if len(found) > size else ""
        return pb.ListKeysResponse(keys=[key_message(k, now) for k in page], next_page_token=token)

    async def RevokeKey(  # noqa: N802
        self, request: pb.RevokeKeyRequest, context: Context
    ) -> pb.RevokeKeyResponse:
        try:
            record = await self._keys.revoke(self._actor(), request.key_id)
        except Exception as exc:
            await abort(context, exc)
            raise
        return pb.RevokeKeyResponse(key=key_message(record, self._clock()))

    async def RotateKey(  # noqa: N802
        self, request: pb.RotateKeyRequest, context: Context
    ) -> pb.RotateKeyResponse:
        try:
            grace = (
                request.grace_period.ToNanoseconds() / 1e9
                if request.HasField("grace_period")
                else DEFAULT_GRACE_S
            )
            secret, new, old = await self._keys.rotate(self._actor(), request.key_id, grace)
        except Exception as exc:
            await abort(context, exc)
            raise
        now = self._clock()
        return pb.RotateKeyResponse(
            key=key_message(new, now), secret=secret, previous_key=key_message(old, now)
        )

    async def GetUsageReport(  # noqa: N802
        self, request: pb.GetUsageReportRequest, context: Context
    ) -> pb.GetUsageReportResponse:
        try:
            start, end, dims, interval = self._report_request(request)
            rows = await self._store.usage_report(
                start, end, dims, interval, request.tenant or None
            )
        except Exception as exc:
            await abort(context, exc)
            raise
        return pb.GetUsageReportResponse(
            rows=[_row(r) for r in rows], start_time=timestamp(start), end_time=timestamp(end)
        )

    def _report_request(
        self, request: pb.GetUsageReportRequest
    ) -> tuple[float, float, list[str], float | None]:
        violations: list[FieldViolation] = []
        end: float | None = self._clock()
        if request.HasField("end_time"):
            end = timestamp_seconds(request.end_time, "end_time", violations)
        start = None if end is None else end - DAY_S
        if request.HasField("start_time"):
            start = timestamp_seconds(request.start_time, "start_time", violations)
        if start is not None and end is not None and end <= start:
            violations.append(FieldViolation("end_time", "must be after start_time"))
        dims: list[str] = []
        for i, dim in enumerate(request.group_by):
            name = _DIMENSIONS.get(dim)
            if name is None:
                violations.append(
                    FieldViolation(
                        f"group_by[{i}]", "USAGE_DIMENSION_TENANT, _AGENT, _MODEL or _KEY"
                    )
                )
            elif name in dims:
                violations.append(FieldViolation(f"group_by[{i}]", "named twice"))
            else:
                dims.append(name)
        interval = None
        if request.HasField("interval"):
            interval = request.interval.ToNanoseconds() / 1e9
            if interval < MIN_INTERVAL_S:
                violations.append(FieldViolation("interval", "at least 60s"))
            elif start is not None and end is not None and (end - start) / interval > MAX_BUCKETS:
                violations.append(
                    FieldViolation("interval", f"at most {MAX_BUCKETS} buckets in the range")
                )
        _raise_first(violations)
        if start is None or end is None:  # not reached: a violation was raised above
            raise InvalidArgument("start_time: invalid")
        return start, end, dims, interval

    async def ListRecentCalls(  # noqa: N802
        self, request: pb.ListRecentCallsRequest, context: Context
    ) -> pb.ListRecentCallsResponse:
        try:
            violations: list[FieldViolation] = []
            size = _page_size(request.page_size, DEFAULT_CALLS, MAX_CALLS, violations)
            _raise_first(violations)
            calls = await self._store.recent_calls(size, request.tenant or None)
        except Exception as exc:
            await abort(context, exc)
            raise
        return pb.ListRecentCallsResponse(calls=[_call(c) for c in calls])

    async def ListTargets(  # noqa: N802
        self, request: pb.ListTargetsRequest, context: Context
    ) -> pb.ListTargetsResponse:
        return pb.ListTargetsResponse(
            targets=[
                pb.TargetStatus(
                    name=t.name,
                    provider=t.provider,
                    model=t.model,
                    breaker_state=_BREAKER.get(t.breaker_state, pb.BREAKER_STATE_UNSPECIFIED),
                    failure_count=t.failure_count,
                    cooldown_remaining=duration(t.cooldown_s),
                    last_error=t.last_error,
                )
                for t in self._targets()
            ]
        )
