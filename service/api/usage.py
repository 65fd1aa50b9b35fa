"""UsageService: the caller's tenant's totals from the usage ledger."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
from switchboard.v1 import usage_pb2 as pb
from switchboard.v1 import usage_pb2_grpc as pb_grpc

from service.api.errors import abort
from service.api.structs import timestamp, timestamp_seconds
from service.context import current
from service.errors import FieldViolation, InvalidArgument
from service.state.records import UsageTotal
from service.state.stores import UsageLedger
from service.usage.pricing import usd

Context = grpc.aio.ServicerContext[object, object]

_DIMENSIONS = {
    pb.USAGE_DIMENSION_AGENT: "agent",
    pb.USAGE_DIMENSION_MODEL: "model",
    pb.USAGE_DIMENSION_KEY: "key_id",
}


def usage_group(t: UsageTotal) -> pb.UsageGroup:
    """A group's totals as the contract's UsageGroup."""
    return pb.UsageGroup(
        agent=t.agent,
        model=t.model,
        key_id=t.key_id,
        calls=t.calls,
        failed_calls=t.failed_calls,
        cache_hits=t.cache_hits,
        input_tokens=t.input_tokens,
        output_tokens=t.output_tokens,
        cost_usd=usd(t.cost_nanos),
        cached_input_tokens=t.cached_input_tokens,
        cache_creation_5m_input_tokens=t.cache_creation_5m_input_tokens,
        cache_creation_1h_input_tokens=t.cache_creation_1h_input_tokens,
        reasoning_tokens=t.reasoning_tokens,
        estimated_calls=t.estimated_calls,
    )


class UsageServicer(pb_grpc.UsageServiceServicer):
    def __init__(self, ledger: UsageLedger) -> None:
        self._ledger = ledger

    async def GetUsage(  # noqa: N802
        self, request: pb.GetUsageRequest, context: Context
    ) -> pb.GetUsageResponse:
        try:
            now = time.time()
            today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0)
            violations: list[FieldViolation] = []
            start = (
                timestamp_seconds(request.start_time, "start_time", violations)
                if request.HasField("start_time")
                else today.replace(microsecond=0).timestamp()
            )
            end = (
                timestamp_seconds(request.end_time, "end_time", violations)
                if request.HasField("end_time")
                else now
            )
            if start is not None and end is not None and end <= start:
                violations.append(FieldViolation("end_time", "must be after start_time"))
            dims = []
            for i, dim in enumerate(request.group_by):
                name = _DIMENSIONS.get(dim)
                if name is None:
                    violations.append(
                        FieldViolation(f"group_by[{i}]", "USAGE_DIMENSION_AGENT, _MODEL or _KEY")
                    )
                elif name in dims:
                    violations.append(FieldViolation(f"group_by[{i}]", "named twice"))
                else:
                    dims.append(name)
            if violations or start is None or end is None:
                raise InvalidArgument(
                    f"{violations[0].field}: {violations[0].description}", violations
                )
            totals = await self._ledger.totals(current().tenant, start, end, dims)
        except Exception as exc:  # mapped to a status in one place
            await abort(context, exc)
            raise
        return pb.GetUsageResponse(
            groups=[usage_group(t) for t in totals],
            start_time=timestamp(start),
            end_time=timestamp(end),
        )
