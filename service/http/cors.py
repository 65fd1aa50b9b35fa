"""Cross-origin requests from browsers (CORS) for the HTTP doors, with Starlette's
``CORSMiddleware``: a maintained implementation of the preflight and the response headers
(which origins, methods and headers are allowed; which answer headers a page may read).

A page may send any request header (``authorization``, ``x-api-key``, Connect's and gRPC-Web's,
the SDKs' own); what it may call is decided by auth, as for any other caller. It may read the
headers that carry a call's outcome: the request id, a delay to wait, and gRPC-Web's status.
"""

from __future__ import annotations

from service.config.model import CorsConfig
from service.http.asgi import Handler

EXPOSED = (
    "x-request-id",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
)


def with_cors(app: Handler, config: CorsConfig) -> Handler:
    """``app`` answering browsers' cross-origin requests as ``config`` allows (``app``
    itself when no origin is allowed: then it costs nothing)."""
    if not config.enabled:
        return app
    # Imported here: a server that allows no origin does not load Starlette.
    from starlette.middleware.cors import CORSMiddleware  # noqa: PLC0415

    return CORSMiddleware(
        app,
        allow_origins=config.allow_origins,
        allow_origin_regex=config.allow_origin_regex,
        allow_methods=("GET", "POST"),
        allow_headers=("*",),
        expose_headers=EXPOSED,
        max_age=config.max_age_s,
    )
