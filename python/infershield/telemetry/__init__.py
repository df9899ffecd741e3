"""Observability: OpenTelemetry traces, Prometheus metrics and structured JSON logs.

``setup_telemetry(config)`` is what ``infershield serve`` calls; the pieces are also usable
alone: :func:`setup_tracing`, :class:`Metrics` + :func:`start_metrics_server`,
:func:`setup_logging`, and the span sites in :mod:`infershield.telemetry.instrument`.
"""

from __future__ import annotations

import logging as _logging
from dataclasses import dataclass

from infershield.config import Config
from infershield.errors import ConfigError
from infershield.telemetry import metrics as metrics
from infershield.telemetry.instrument import (
    RpcScope,
    capture_context,
    check_span,
    current_rpc,
    detector_batch_span,
    detector_span,
    record_check,
    record_stage,
    record_upstream_error,
    rpc_scope,
    server_span,
    set_rpc_status,
    upstream_span,
    upstream_timer,
)
from infershield.telemetry.logs import JsonFormatter, setup_logging
from infershield.telemetry.metrics import (
    DEFAULT_METRICS_LISTEN,
    Metrics,
    MetricsServer,
    start_metrics_server,
)
from infershield.telemetry.tracing import (
    extract_context,
    inject_metadata,
    setup_tracing,
    shutdown_tracing,
    tracing_enabled,
)

__all__ = [
    "JsonFormatter",
    "Metrics",
    "MetricsServer",
    "RpcScope",
    "Telemetry",
    "capture_context",
    "check_span",
    "current_rpc",
    "detector_batch_span",
    "detector_span",
    "extract_context",
    "inject_metadata",
    "record_check",
    "record_stage",
    "record_upstream_error",
    "rpc_scope",
    "server_span",
    "set_rpc_status",
    "setup_logging",
    "setup_telemetry",
    "setup_tracing",
    "shutdown_tracing",
    "start_metrics_server",
    "tracing_enabled",
    "upstream_span",
    "upstream_timer",
]


_log = _logging.getLogger(__name__)

@dataclass
class Telemetry:
    """What :func:`setup_telemetry` started; ``close()`` stops it (flushing spans)."""

    metrics: Metrics
    metrics_server: MetricsServer | None

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.metrics.close()
        if metrics.active() is self.metrics:
            metrics.install(None)
        shutdown_tracing()


def setup_telemetry(
    config: Config, *, logging: bool = True, serve_metrics: bool = True
) -> Telemetry:
    """Set up logs, tracing and metrics for a server process from ``config`` (+ ``OTEL_*``).

    The metrics endpoint is on by default on loopback (``server.metrics_listen: auto``:
    127.0.0.1:9464, a warning if that port is taken) and off when the field is empty; the
    metrics are recorded (and installed process-wide) either way, so they cost the same.
    ``serve_metrics=False``: record only (a child of ``server.processes`` > 1, whose
    metrics the supervisor serves).
    """
    if logging:
        setup_logging(config.telemetry, exclusive=True)
    setup_tracing(config.telemetry)
    m = Metrics()
    metrics.install(m)
    server = None
    listen = config.server.metrics_listen if serve_metrics else ""
    if listen == "auto":
        try:
            server = start_metrics_server(m, DEFAULT_METRICS_LISTEN)
        except ConfigError as exc:
            # On by default, but a second instance on the host must still start.
            _log.warning("metrics not served: %s (set server.metrics_listen to another "
                         "HOST:PORT, or to \"\" to turn them off)", exc.message)
    elif listen:
        server = start_metrics_server(m, listen)
    return Telemetry(m, server)
