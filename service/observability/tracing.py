"""The tracer provider and the server span's interceptor: built by the app from config and
the standard ``OTEL_*`` variables (:mod:`service.observability.otel_env`), never global.

Spans leave the process only when an exporter is configured. Without one nothing is sampled:
spans are non-recording (a fraction of the cost per call) but still carry trace and span
ids, the caller's ``traceparent`` included, so logs keep them.

The server span is opentelemetry-instrumentation-grpc's (its aio server interceptor, with
the instrumentation's own service-name filter for the services not traced); the chain asks
it once per method, not per call (:mod:`service.interceptors.chain`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import TracerProvider as AnyTracerProvider

from service.config import ConfigError
from service.config.chain_model import TracingConfig
from service.observability.otel_env import OtelEnvError, TracingSettings, tracing_settings
from service.version import package_version

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)


def resolve_tracing(config: TracingConfig, environ: Mapping[str, str]) -> TracingSettings:
    """``config`` with the ``OTEL_*`` variables of ``environ``
    (:func:`service.observability.otel_env.tracing_settings`).

    Raises:
        ConfigError: a variable or key has a value that cannot be used (named).
    """
    try:
        return tracing_settings(config, environ, version=package_version())
    except OtelEnvError as exc:
        raise ConfigError(f"observability.tracing: {exc}") from None


def build_tracer_provider(settings: TracingSettings) -> TracerProvider:
    """A provider that samples and exports as ``settings`` say (nothing sampled for
    exporter ``none``)."""
    exporting = settings.exporter != "none"
    provider = TracerProvider(
        resource=Resource.create(dict(settings.resource)),
        sampler=sampler(settings) if exporting else ALWAYS_OFF,
    )
    if exporting:
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    log.info(
        "tracing",
        extra={
            "event": "tracing",
            "exporter": settings.exporter,
            "otlp_protocol": settings.protocol if settings.exporter == "otlp" else "",
            "otlp_endpoint": settings.endpoint if settings.exporter == "otlp" else "",
            "sampler": settings.sampler,
            "sampler_arg": settings.sampler_arg,
            "service_name": settings.service_name,
        },
    )
    return provider


def sampler(settings: TracingSettings) -> Sampler:
    """The sampler named by ``settings`` (OTEL_TRACES_SAMPLER's names)."""
    name, ratio = settings.sampler, settings.sampler_arg
    root: Sampler = (
        ALWAYS_OFF
        if name.endswith("always_off")
        else TraceIdRatioBased(ratio)
        if name.endswith("traceidratio")
        else ALWAYS_ON
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter(service_name=settings.service_name)
    headers = {key: value.reveal() for key, value in settings.headers.items()}
    # Imported here: an exporter (and its transport) is only needed when configured.
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            headers=headers or None,
            timeout=settings.timeout_s,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=settings.endpoint, headers=headers or None, timeout=settings.timeout_s
    )


def server_interceptor(
    tracer_provider: AnyTracerProvider, settings: TracingSettings
) -> grpc.aio.ServerInterceptor[Any, Any]:
    """opentelemetry-instrumentation-grpc's aio server interceptor, leaving out the
    services in ``settings.excluded_services``."""
    excluded = settings.excluded_services
    keep = (
        filters.negate(filters.any_of(*(filters.service_name(s) for s in excluded)))
        if excluded
        else None
    )
    interceptor: grpc.aio.ServerInterceptor[Any, Any] = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=keep
    )
    return interceptor
