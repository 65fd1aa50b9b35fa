"""What the server span learns from a call (a sink of the observe layer, for every call).

opentelemetry-instrumentation-grpc makes the server span; its servicer-context proxy would
record aborts on it, but the chain's layers work on the context under the proxy (see
:func:`service.interceptors.context.servicer_context`), so this sink records the call's
final status instead, as the RPC conventions say, and also for a call that ends without an
abort (cancelled by the caller, out of time), which the proxy never sees. When the call
ends, while the span is still open and current, it sets:

- ``rpc.grpc.status_code``, and an ERROR status only for UNKNOWN, DEADLINE_EXCEEDED,
  UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS: a caller's error such as NOT_FOUND
  or UNAUTHENTICATED leaves the status unset (the gRPC conventions' server table);
- ``gen_ai.agent.name``, ``gen_ai.agent.version`` (GenAI conventions), and
  ``switchboard.tenant``, ``switchboard.key_id``, ``switchboard.request_id``;
- ``switchboard.door``, the door the call came through, and for Connect the ``rpc.system``
  the conventions give it (``connect_rpc``; gRPC-Web is ``grpc``);
- the span's name as the conventions spell it, ``package.Service/Method`` (the
  instrumentation keeps grpc's leading ``/``).

Sources: https://opentelemetry.io/docs/specs/semconv/rpc/grpc/ (status codes, span status),
https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/ (agent attributes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

if TYPE_CHECKING:
    from service.interceptors.observe import CallRecord

SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that make a server span's status ERROR (the gRPC conventions' server table)."""


# OpenTelemetry's rpc.system values for the doors that are RPC protocols besides gRPC.
_RPC_SYSTEMS = {"connect": "connect_rpc"}


class ServerSpan:
    """The observe layer's sink that annotates the current (server) span."""

    def started(self, record: CallRecord) -> None:
        return None

    def finished(self, record: CallRecord) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.update_name(record.method.rpc)
        span.set_attribute("switchboard.door", record.method.door)
        if (system := _RPC_SYSTEMS.get(record.method.door)) is not None:
            span.set_attribute("rpc.system", system)
        if record.agent:
            span.set_attribute("gen_ai.agent.name", record.agent)
        if record.agent_version:
            span.set_attribute("gen_ai.agent.version", record.agent_version)
        if record.tenant:
            span.set_attribute("switchboard.tenant", record.tenant)
        if record.key_id:
            span.set_attribute("switchboard.key_id", record.key_id)
        span.set_attribute("switchboard.request_id", record.request_id)
        span.set_attribute("rpc.grpc.status_code", record.code.value[0])
        if record.code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, record.code.name))
