"""The standard OpenTelemetry SDK environment variables for traces, read from the environment
mapping the app is given (so tests pass a dict), as the OpenTelemetry Operator injects them.

Source: the OpenTelemetry specification, "Environment Variable Specification" and "OTLP
Exporter Configuration" (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/,
https://opentelemetry.io/docs/specs/otel/protocol/exporter/), and
opentelemetry-instrumentation-grpc's ``OTEL_PYTHON_GRPC_EXCLUDED_SERVICES``.

Precedence, per setting: a key set in ``observability.tracing`` (the file or its
``SWITCHBOARD_OBSERVABILITY__TRACING__…`` override) > the ``OTEL_*`` variable (the
signal-specific ``OTEL_EXPORTER_OTLP_TRACES_*`` over ``OTEL_EXPORTER_OTLP_*``) > the default.
One deliberate default differs from the SDK's: with no exporter named anywhere, spans are
exported (OTLP) only when an OTLP endpoint is set, so a server with no collector does not
retry a dead one forever. Variables the exporter reads itself (certificates, client key,
compression) are left to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import unquote

from service.config.chain_model import HEALTH_PREFIX, REFLECTION_PREFIXES, TracingConfig
from service.secrets import Secret

T = TypeVar("T", bound=str)
Exporter = Literal["none", "otlp", "console"]
Protocol = Literal["grpc", "http/protobuf"]
EXPORTERS: tuple[Exporter, ...] = ("none", "otlp", "console")
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
DEFAULT_ENDPOINTS: Mapping[Protocol, str] = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318",
}
HTTP_TRACES_PATH = "/v1/traces"
DEFAULT_SERVICE_NAME = "switchboard"
NOT_TRACED = tuple(
    prefix.strip("/") for prefix in (HEALTH_PREFIX, *REFLECTION_PREFIXES)
)  # service names: health and both reflection versions


class OtelEnvError(ValueError):
    """An ``OTEL_*`` variable (or tracing key) has a value this server cannot use; the
    message names the variable and what it accepts, never a header's value."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """Where and how spans go, resolved once at start."""

    exporter: Exporter
    protocol: Protocol = "grpc"
    endpoint: str = DEFAULT_ENDPOINTS["grpc"]  # for http/protobuf: the full traces URL
    insecure: bool | None = None  # None: the exporter decides from the endpoint's scheme
    headers: Mapping[str, Secret] = field(default_factory=dict)
    timeout_s: float | None = None
    resource: Mapping[str, str] = field(default_factory=dict)  # service.name included
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    excluded_services: tuple[str, ...] = NOT_TRACED

    @property
    def service_name(self) -> str:
        return self.resource.get("service.name", DEFAULT_SERVICE_NAME)


def tracing_settings(
    config: TracingConfig, environ: Mapping[str, str], version: str = ""
) -> TracingSettings:
    """Resolve ``config`` and the ``OTEL_*`` variables of ``environ`` (see the module
    docstring). ``version``: the service.version resource attribute, unless set.

    Raises:
        OtelEnvError: a variable names an unknown exporter, protocol or sampler, or a number
            or boolean does not parse.
    """

    def env(*names: str) -> tuple[str, str | None]:
        """The first of ``names`` that is set and its value: an error names the variable
        actually read (a signal-specific one, say), never the general one instead."""
        return _first(environ, *names)

    protocol: Protocol = config.otlp_protocol or _choice(
        *env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"), PROTOCOLS
    )
    endpoint = config.otlp_endpoint
    if endpoint is None:
        signal = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")[1]
        base = env("OTEL_EXPORTER_OTLP_ENDPOINT")[1]
        if signal is not None:
            endpoint = signal
        elif base is not None:
            # The general endpoint is a base URL: OTLP/HTTP appends the signal's path.
            endpoint = base.rstrip("/") + HTTP_TRACES_PATH if protocol != "grpc" else base
    exporter = config.exporter or _exporter(environ, endpoint_set=endpoint is not None)
    if endpoint is None:
        default = DEFAULT_ENDPOINTS[protocol]
        endpoint = default + HTTP_TRACES_PATH if protocol != "grpc" else default
    insecure = config.otlp_insecure
    if insecure is None:
        insecure = _bool(*env("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"))
    sampler, sampler_arg = _sampler(
        config, env("OTEL_TRACES_SAMPLER")[1], env("OTEL_TRACES_SAMPLER_ARG")[1]
    )
    excluded: tuple[str, ...] = NOT_TRACED
    if config.exclude_services is not None:
        excluded = tuple(config.exclude_services)
    elif (listed := env("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES")[1]) is not None:
        excluded = tuple(_list(listed))
    timeout_name, timeout = env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    # The specification's timeout is in milliseconds; the exporters take seconds.
    timeout_s = None if timeout is None else _number(timeout_name, timeout) / 1000
    return TracingSettings(
        exporter=exporter,
        protocol=protocol,
        endpoint=endpoint,
        insecure=insecure,
        headers=_headers(*env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")),
        timeout_s=timeout_s,
        resource=_resource(config, environ, version),
        sampler=sampler,
        sampler_arg=sampler_arg,
        excluded_services=excluded,
    )


def _exporter(environ: Mapping[str, str], *, endpoint_set: bool) -> Exporter:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not named:
        return "otlp" if endpoint_set else "none"
    chosen = _list(named.lower())
    unknown = [n for n in chosen if n not in EXPORTERS]
    if unknown or len(chosen) != 1:
        raise OtelEnvError(f"OTEL_TRACES_EXPORTER={named!r}: name one of {', '.join(EXPORTERS)}")
    return _choice("OTEL_TRACES_EXPORTER", chosen[0], EXPORTERS)


def _sampler(config: TracingConfig, name: str | None, arg: str | None) -> tuple[str, float]:
    if config.sample_ratio is not None:
        return "parentbased_traceidratio", config.sample_ratio
    sampler = (name or "parentbased_always_on").lower()
    if sampler not in SAMPLERS:
        raise OtelEnvError(f"OTEL_TRACES_SAMPLER={name!r}: one of {', '.join(SAMPLERS)}")
    ratio = 1.0 if arg is None else _number("OTEL_TRACES_SAMPLER_ARG", arg)
    if "ratio" in sampler and not 0.0 <= ratio <= 1.0:
        raise OtelEnvError(f"OTEL_TRACES_SAMPLER_ARG={arg!r}: a ratio from 0 to 1")
    return sampler, ratio


def _resource(config: TracingConfig, environ: Mapping[str, str], version: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``key=value,…``, values percent-encoded), then
    ``OTEL_SERVICE_NAME`` over its ``service.name``, then the config's ``service_name``."""
    attributes: dict[str, str] = {}
    for item in _list(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OtelEnvError("OTEL_RESOURCE_ATTRIBUTES: expected comma-separated key=value pairs")
        attributes[key.strip()] = unquote(value.strip())
    service = environ.get("OTEL_SERVICE_NAME", "").strip()
    if service:
        attributes["service.name"] = service
    if config.service_name is not None:
        attributes["service.name"] = config.service_name
    attributes.setdefault("service.name", DEFAULT_SERVICE_NAME)
    if version:
        attributes.setdefault("service.version", version)
    return attributes


def _headers(name: str, text: str | None) -> dict[str, Secret]:
    """``key=value,…`` (values percent-encoded) as the OTLP exporter's headers; ``name``:
    the variable ``text`` was read from."""
    headers: dict[str, Secret] = {}
    for item in _list(text or ""):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Never echo the text: a header carries an API key.
            raise OtelEnvError(f"{name}: expected key=value pairs")
        headers[key.strip().lower()] = Secret(unquote(value.strip()))
    return headers


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _first(environ: Mapping[str, str], *names: str) -> tuple[str, str | None]:
    """The first of ``names`` set in ``environ``, and its value (None: none is set)."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return names[-1], None


def _choice(name: str, value: str | None, allowed: tuple[T, ...]) -> T:
    if value is None:
        return allowed[0]
    for option in allowed:
        if value.lower() == option:
            return option
    raise OtelEnvError(f"{name}={value!r}: one of {', '.join(allowed)}")


def _bool(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in {"true", "false"}:
        return value.lower() == "true"
    raise OtelEnvError(f"{name}={value!r}: true or false")


def _number(name: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise OtelEnvError(f"{name}={value!r}: not a number") from None
