"""``switchboard health``: ask a server's grpc.health.v1 service, for container health checks
(Docker's HEALTHCHECK, compose) where the kubelet's native gRPC probe is not available."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def probe(address: str, service: str = "", timeout_s: float = 3.0) -> str | None:
    """None when ``service`` at ``address`` is SERVING, else what it is instead."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
