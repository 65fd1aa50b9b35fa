"""The tracer provider: built by the app from config (or passed in by tests), never global.

Spans leave the process only when ``observability.tracing.exporter`` is ``otlp``. Without an
exporter nothing is sampled: spans are non-recording (a fraction of the cost per call) but
still carry trace and span ids, the caller's ``traceparent`` included, so logs keep them.
"""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from service.config.chain_model import TracingConfig


def build_tracer_provider(config: TracingConfig) -> TracerProvider:
    exporting = config.exporter != "none"
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)) if exporting else ALWAYS_OFF,
    )
    if config.exporter == "otlp":
        # Imported here: the exporter (and its grpc channel) is only needed when configured.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=config.otlp_insecure)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
