"""``switchboard health``: ask a server's grpc.health.v1 service, for container health checks
(Docker's HEALTHCHECK, compose, a Kubernetes exec probe) where the kubelet's native gRPC probe
is not available or cannot speak TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True, slots=True)
class ProbeTls:
    """How the probe speaks TLS: the CA that signed the server's certificate (None: the
    system's roots), a client certificate and key for mTLS, and the name to check the
    server's certificate against when the address does not carry it."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None


def _channel(address: str, tls: ProbeTls | None) -> grpc.Channel:
    """Raises OSError when a TLS file cannot be read."""
    if tls is None:
        return grpc.insecure_channel(address)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )
    options = []
    if tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(address, credentials, options=options)


def probe(
    address: str, service: str = "", timeout_s: float = 3.0, tls: ProbeTls | None = None
) -> str | None:
    """None when ``service`` at ``address`` is SERVING, else what it is instead."""
    try:
        channel = _channel(address, tls)
    except OSError as exc:
        return f"cannot read a TLS file: {exc.filename}: {exc.strerror}"
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            details = exc.details() or (
                f"no health service named {service!r}"
                if exc.code() is grpc.StatusCode.NOT_FOUND
                else "no details"
            )
            return f"{exc.code().name}: {details}"
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
