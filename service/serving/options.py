"""The grpc.aio server's channel arguments, from the ``server`` and ``transport`` sections.

Why these exist (docs/operations.md says more): gRPC multiplexes calls over
long-lived HTTP/2 connections, and a Kubernetes Service balances connections, not calls; so a
client that connected to one pod keeps using it after the Deployment scales out.
``max_connection_age`` sends GOAWAY after a while, the client reconnects through the Service,
and load spreads again; the grace lets calls in flight on the old connection finish.
Keepalive pings find dead peers behind NATs and load balancers; the enforcement settings
(minimum ping interval, ping strikes) stop a client that floods pings from costing the others.
"""

from __future__ import annotations

from service.config.model import ServerConfig, TransportConfig


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def server_options(
    server: ServerConfig, transport: TransportConfig, *, reuse_port: bool
) -> list[tuple[str, int]]:
    """Channel arguments for ``grpc.aio.server(options=...)``.

    ``reuse_port`` is on only for worker processes that share a port on purpose
    (``serve --workers N``); a single process owns its port, so a second server started by
    mistake on the same port fails to bind instead of silently taking half the traffic.
    """
    return [
        ("grpc.max_receive_message_length", server.max_receive_message_bytes),
        ("grpc.max_send_message_length", server.max_send_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_concurrent_streams", transport.max_concurrent_streams),
        ("grpc.keepalive_time_ms", _ms(transport.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", _ms(transport.keepalive_timeout_s)),
        ("grpc.max_connection_idle_ms", _ms(transport.max_connection_idle_s)),
        ("grpc.max_connection_age_ms", _ms(transport.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", _ms(transport.max_connection_age_grace_s)),
        # Server side: the least time between a client's pings when no data flows.
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            _ms(transport.min_client_ping_interval_s),
        ),
        ("grpc.keepalive_permit_without_calls", int(transport.permit_keepalive_without_calls)),
        ("grpc.http2.max_ping_strikes", transport.max_ping_strikes),
        *pending_limits(transport.max_concurrent_calls),
    ]


# grpc core's defaults for calls it holds before the application takes them (src/core/server/
# server.h: GRPC_ARG_SERVER_MAX_PENDING_REQUESTS and ..._HARD_LIMIT).
_PENDING_SOFT, _PENDING_HARD = 1000, 3000


def pending_limits(max_concurrent_calls: int) -> list[tuple[str, int]]:
    """How many arrived calls grpc core may hold before the server's loop takes each one.

    Past the soft limit grpc core drops new calls at random (random early detection), all of
    them past the hard limit, and the client sees a bare CANCELLED with no reason: a burst
    of 2,000 Streams at once lost ~150 of them that way under a limit of 2,100 calls. The
    limits follow ``max_concurrent_calls`` (its value at start: channel arguments are fixed
    for the server's life) with room for calls past it, so every call up to that limit is
    taken, and the ones past it are refused by admission with RESOURCE_EXHAUSTED and a
    retry delay instead. Never below grpc core's defaults (1,000 and 3,000).
    """
    soft = max(_PENDING_SOFT, 2 * max_concurrent_calls)
    hard = max(_PENDING_HARD, 2 * soft)
    return [
        ("grpc.server.max_pending_requests", soft),
        ("grpc.server.max_pending_requests_hard_limit", hard),
    ]
