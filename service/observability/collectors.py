"""The standard collectors every Switchboard registry carries: prometheus_client's process,
platform and garbage-collector collectors, and ``switchboard_build_info``.

Registered on the App's registry (one process) and on the supervisor's (``serve --workers``,
whose workers' own registries are not served: there ``process_*`` describes the supervisor).

``switchboard_build_info{version,python_version,grpc_version}`` is always 1, the Prometheus
convention for build facts (https://prometheus.io/docs/instrumenting/writing_exporters/
#target-labels-not-static-scraped-labels): join on it, or graph a rollout by ``version``.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

import grpc
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.version import package_version

BUILD_INFO = "switchboard_build_info"


class BuildInfo(Collector):
    """``switchboard_build_info``, computed once."""

    def __init__(self) -> None:
        self._labels = {
            "version": package_version(),
            "python_version": platform.python_version(),
            "grpc_version": grpc.__version__,
        }

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            BUILD_INFO,
            "Always 1; the labels say which build is running.",
            labels=list(self._labels),
        )
        info.add_metric(list(self._labels.values()), 1)
        yield info


def register_standard(registry: CollectorRegistry) -> None:
    """Add ``process_*`` (CPU, memory, open files; on Linux), ``python_info``,
    ``python_gc_*`` and ``switchboard_build_info`` to ``registry``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(BuildInfo())
