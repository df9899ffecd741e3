"""OpenTelemetry tracing: provider set-up from ``OTEL_*`` env + config, and W3C propagation.

Precedence follows the rest of the config (defaults < file < env): the standard ``OTEL_*``
variables override the ``telemetry:`` section. With nothing configured, tracing is off and
every instrumentation helper returns a shared no-op context manager, so the hot path pays
one attribute read per span site.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from infershield.config import TelemetryConfig
from infershield.errors import ConfigError

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "infershield"
#: Metadata as gRPC hands it over: ``(key, value)`` pairs; ``-bin`` keys carry bytes.
Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """The resolved tracing settings, after env over config."""

    exporter: str  # "otlp" | "console" | "none"
    endpoint: str
    service_name: str
    sampler: Sampler
    #: Probability that a span with no parent (a request without incoming trace context)
    #: starts a trace; drawn by the instrumentation, 1.0 leaves every decision to ``sampler``.
    root_ratio: float


class _State:
    """Module state: the tracer the instrumentation helpers use, and whether it records."""

    __slots__ = ("enabled", "provider", "root_ratio", "tracer")

    def __init__(self) -> None:
        self.enabled = False
        self.root_ratio = 0.0
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()


STATE = _State()


def resolve_settings(
    config: TelemetryConfig, env: Mapping[str, str] | None = None
) -> TracingSettings:
    """Merge ``OTEL_*`` variables over ``config`` (env wins); raise ConfigError on a bad value."""
    env = os.environ if env is None else env
    endpoint = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or config.otlp_endpoint
    )
    exporter = (env.get("OTEL_TRACES_EXPORTER") or config.traces_exporter).strip().lower()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        exporter = "none"
    if exporter == "auto":
        # The OTel default is "otlp"; we only export when somewhere to export to is named, so a
        # plain `infershield serve` does not spam connection errors to localhost:4317.
        exporter = "otlp" if endpoint else "none"
    if exporter not in ("otlp", "console", "none"):
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER / telemetry.traces_exporter: unsupported exporter {exporter!r} "
            "(supported: otlp, console, none)"
        )
    sampler, root_ratio = _sampler(config.sample_ratio, env)
    return TracingSettings(
        exporter=exporter,
        endpoint=endpoint or "http://localhost:4317",
        service_name=env.get("OTEL_SERVICE_NAME") or config.service_name,
        sampler=sampler,
        root_ratio=root_ratio,
    )


def _sampler(ratio: float, env: Mapping[str, str]) -> tuple[Sampler, float]:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if arg:
        try:
            ratio = float(arg)
        except ValueError:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG: expected a number, got {arg!r}") from None
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG: must be within [0, 1], got {ratio}")
    # For the parent-based ratio (our default) the root decision is taken by the
    # instrumentation (``instrument._draw_root``) before any span exists, so the SDK sampler
    # only follows parents; a second ratio draw in the SDK would square the ratio.
    table: dict[str, tuple[Sampler, float]] = {
        "": (ParentBased(ALWAYS_ON), ratio),
        "parentbased_traceidratio": (ParentBased(ALWAYS_ON), ratio),
        "traceidratio": (TraceIdRatioBased(ratio), 1.0),  # ignores parents: the SDK decides
        "always_on": (ALWAYS_ON, 1.0),
        "always_off": (ALWAYS_OFF, 0.0),
        "parentbased_always_on": (ParentBased(ALWAYS_ON), 1.0),
        "parentbased_always_off": (ParentBased(ALWAYS_OFF), 0.0),
    }
    if name not in table:
        known = ", ".join(k for k in table if k)
        raise ConfigError(f"OTEL_TRACES_SAMPLER: unsupported sampler {name!r} (known: {known})")
    return table[name]


def setup_tracing(
    config: TelemetryConfig,
    *,
    env: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
    set_global: bool = True,
) -> TracerProvider | None:
    """Configure tracing for this process; return the SDK provider, or None when off.

    ``exporter`` replaces the one the settings name (tests pass an in-memory one). With
    ``set_global`` the provider also becomes OpenTelemetry's global one (the first call wins,
    as OpenTelemetry allows only one), so third-party instrumentation joins the same traces.
    Calling it again replaces the previous provider used by infershield's own spans.
    """
    settings = resolve_settings(config, env)
    shutdown_tracing()
    if settings.exporter == "none" and exporter is None:
        return None
    provider = TracerProvider(
        sampler=settings.sampler,
        resource=Resource.create({"service.name": settings.service_name}),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif settings.exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # Batching keeps the export off the request path: on_end only enqueues.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    if set_global and not _global_is_sdk():
        trace.set_tracer_provider(provider)
    STATE.provider = provider
    STATE.tracer = provider.get_tracer(INSTRUMENTATION_NAME)
    STATE.root_ratio = settings.root_ratio
    STATE.enabled = True
    log.info(
        "tracing enabled",
        extra={"exporter": type(exporter).__name__ if exporter else settings.exporter,
               "endpoint": settings.endpoint,
               "service_name": settings.service_name},
    )
    return provider


def _global_is_sdk() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def shutdown_tracing() -> None:
    """Flush and stop the provider set up by :func:`setup_tracing`; tracing is off after it."""
    provider = STATE.provider
    STATE.enabled = False
    STATE.provider = None
    STATE.tracer = trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    return STATE.enabled


# --------------------------------------------------------------------------- propagation


class _MetadataGetter(Getter[Metadata]):
    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        found = [v for k, v in carrier if k == key and isinstance(v, str)]
        return found or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


class _ListSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        # gRPC metadata keys must be lowercase; W3C names already are.
        carrier.append((key.lower(), value))


_GETTER = _MetadataGetter()
_SETTER = _ListSetter()


def extract_context(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    """The caller's W3C trace context (``traceparent``/``tracestate``) from gRPC metadata.

    Uses the global propagator (``OTEL_PROPAGATORS``; W3C trace context + baggage by
    default). Missing or malformed headers give an empty context, i.e. a new root trace.
    """
    carrier = [(str(k).lower(), v) for k, v in (metadata or ())]
    return propagate.extract(carrier, getter=_GETTER)


def inject_metadata(
    metadata: Iterable[tuple[str, Any]] | None = None, context: Context | None = None
) -> Sequence[tuple[str, Any]]:
    """Return ``metadata`` plus the current (or given) trace context, for an outgoing call.

    Any trace headers already in ``metadata`` (the caller's) are replaced, so the upstream sees
    its parent as our client span, not the caller's span. With tracing off there is no
    context to add: a caller's headers are still dropped, and ``metadata`` without any comes
    back as it is (no copy per call).
    """
    fields = _propagation_fields()
    if not STATE.enabled and context is None:
        if isinstance(metadata, tuple) and not any(k.lower() in fields for k, _ in metadata):
            return metadata
        return [(k, v) for k, v in (metadata or ()) if k.lower() not in fields]
    out: list[tuple[str, Any]] = [(k, v) for k, v in (metadata or ()) if k.lower() not in fields]
    extra: list[tuple[str, str]] = []
    propagate.inject(extra, context=context, setter=_SETTER)
    out.extend(extra)
    return out


_FIELDS: tuple[Any, frozenset[str]] = (None, frozenset())


def _propagation_fields() -> frozenset[str]:
    """The header names the global propagator writes, recomputed only when it changes."""
    global _FIELDS
    textmap = propagate.get_global_textmap()
    if _FIELDS[0] is not textmap:
        _FIELDS = (textmap, frozenset(f.lower() for f in textmap.fields))
    return _FIELDS[1]
