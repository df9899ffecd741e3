"""Prometheus metrics: one :class:`Metrics` object per process, on its own registry.

Every metric the firewall exposes is defined here, so names and labels stay in one place
(the Grafana dashboard and ``infershield top`` read these names). Other components update
them through typed attributes (``metrics.queue_depth.set(n)``) or the ``observe_*``
helpers. A fresh ``CollectorRegistry`` per instance (not the global default) lets tests run
several side by side.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import start_http_server

from infershield.errors import ConfigError
from infershield.verdict import Decision, Verdict

PREFIX = "infershield"
#: Pipeline stages with their own latency series.
STAGES = ("input_checks", "upstream", "output_checks", "total")
#: Where ``server.metrics_listen: auto`` (the default) serves the metrics: loopback only.
DEFAULT_METRICS_LISTEN = "127.0.0.1:9464"
#: Streaming RPCs: their duration is the stream's lifetime, not a request's latency.
STREAMING_RPCS = frozenset({"ModelStreamInfer"})
BreakerState = Literal["closed", "half_open", "open"]
#: Numeric breaker state for the gauge, so Grafana can threshold and graph it.
BREAKER_VALUES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}

# Latency buckets (seconds): checks run in tens of microseconds, upstream calls in seconds.
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
#: Distinct ``tenant`` label values before further tenants are counted as ``other``.
MAX_TENANT_LABELS = 100
#: How often a pulled gauge is pushed to its file in multiprocess mode (seconds).
PULL_INTERVAL_S = 1.0
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """All firewall metrics, registered on ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests", "RPCs handled, by method, model, decision and gRPC status code.",
            ["rpc", "model", "decision", "code"], registry=r,
        )
        self.blocks = Counter(
            f"{PREFIX}_blocks", "Texts blocked, by check, category and stage.",
            ["check", "category", "stage"], registry=r,
        )
        self.stage_latency = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Latency per request stage (input_checks, upstream, output_checks, total; "
            "total is unary RPCs only).",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.check_latency = Histogram(
            f"{PREFIX}_check_duration_seconds", "Latency of one check over one batch of texts.",
            ["check", "stage"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        # multiprocess_mode matters only with server.processes > 1 (PROMETHEUS_MULTIPROC_DIR
        # set): what the parent's endpoint shows for the children's gauges together.
        self.in_flight = Gauge(
            f"{PREFIX}_in_flight_requests", "Requests being handled now.", registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth", "Requests waiting for a concurrency slot.", registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size", "Texts per batch, by component (request, detector).",
            ["component"], buckets=_BATCH_BUCKETS, registry=r,
        )
        self.worker_restarts = Counter(
            f"{PREFIX}_worker_restarts", "Sandboxed model workers replaced after a crash, a limit "
            "or a timeout.", registry=r,
        )
        self.rate_limited = Counter(
            f"{PREFIX}_rate_limit_rejections", "Requests rejected by a limit, by limit name.",
            ["limit"], registry=r,
        )
        self.quarantines = Counter(
            f"{PREFIX}_quarantines", "Callers or workers quarantined, by reason.", ["reason"],
            registry=r,
        )
        # Abuse control (infershield.abuse): anomalies, alerts, the shared limit store.
        self.anomalies = Counter(
            f"{PREFIX}_anomalies", "Per-caller anomalies detected, by feature.", ["feature"],
            registry=r,
        )
        self.alerts = Counter(
            f"{PREFIX}_alerts", "Anomaly webhook alerts, by outcome (sent, failed, dropped).",
            ["outcome"], registry=r,
        )
        self.ratelimit_store_down = Gauge(
            f"{PREFIX}_ratelimit_store_down",
            "1 while the shared rate limit store is unreachable (on_error applies).", registry=r,
            multiprocess_mode="livemax",
        )
        self.ratelimit_store_outages = Counter(
            f"{PREFIX}_ratelimit_store_outages", "Times the rate limit store became unreachable.",
            registry=r,
        )
        self.breaker_state = Gauge(
            f"{PREFIX}_upstream_circuit_state",
            "Upstream circuit breaker: 0 closed, 1 half-open, 2 open.", ["upstream"], registry=r,
            multiprocess_mode="livemax",
        )
        self._breaker_last: dict[str, str] = {}
        # labels() costs a lock and a dict build per call; checks are a small fixed set.
        self._check_hist: dict[tuple[str, str], Any] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.breaker_transitions = Counter(
            f"{PREFIX}_upstream_circuit_transitions", "Circuit breaker state changes.",
            ["upstream", "state"], registry=r,
        )
        self.auth_rejections = Counter(
            f"{PREFIX}_auth_rejections", "Calls refused before any work: credentials (no, "
            "unknown or revoked key) or address (outside server.allow_cidrs).", ["reason"],
            registry=r,
        )
        self.tenant_requests = Counter(
            f"{PREFIX}_tenant_requests", "Screened-service RPCs by caller tenant and gRPC status "
            f"code (at most {MAX_TENANT_LABELS} tenants, then 'other').", ["tenant", "code"],
            registry=r,
        )
        self._tenants: set[str] = set()
        self.upstream_errors = Counter(
            f"{PREFIX}_upstream_errors", "Upstream calls that failed, by gRPC status code.",
            ["code"], registry=r,
        )
        self.policy_reloads = Counter(
            f"{PREFIX}_policy_reloads", "Policy reloads (SIGHUP or the file changing), by "
            "result (ok, rejected); with server.processes > 1, one per process.", ["result"],
            registry=r,
        )
        # In multiprocess mode a gauge's set_function is never read (the parent reads only
        # the children's files), so pulled gauges are pushed by a poller thread instead.
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._pulled: list[tuple[Any, Callable[[], float]]] = []
        self._poller: threading.Thread | None = None
        self._stop_poll = threading.Event()

    # ------------------------------------------------------------------ typed helpers

    def observe_request(
        self, *, rpc: str, model: str, decision: str, code: str, seconds: float
    ) -> None:
        """One finished RPC; ``decision`` is allow/block/redact/error, ``code`` a gRPC name.

        A stream's lifetime (minutes for a long-lived ModelStreamInfer) is no request
        latency: streams are counted but stay out of the ``total`` stage; the stages of each
        message they carry are recorded as they are screened.
        """
        self.child(self.requests, rpc, model or "-", decision, code).inc()
        if rpc not in STREAMING_RPCS:
            self.child(self.stage_latency, "total").observe(seconds)

    def observe_tenant(self, tenant: str, code: str) -> None:
        """One RPC by ``tenant`` (from the keys file, or ``anonymous``): a bounded label."""
        if tenant not in self._tenants:
            if len(self._tenants) >= MAX_TENANT_LABELS:
                tenant = "other"
            else:
                self._tenants.add(tenant)
        self.child(self.tenant_requests, tenant, code).inc()

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.child(self.stage_latency, stage).observe(seconds)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set: ``labels()`` takes a
        lock and builds a dict on every call, and the hot path records a few per request.
        The label sets are the metric's own (already bounded where a label comes from the
        caller), so this cache is no larger than the metric."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_check(
        self, check: str, stage: str, verdicts: Iterable[Verdict], seconds: float
    ) -> None:
        """One check over one batch: its latency, and a block per blocked text and category."""
        hist = self._check_hist.get((check, stage))
        if hist is None:
            hist = self._check_hist[(check, stage)] = self.check_latency.labels(check, stage)
        hist.observe(seconds)
        for v in verdicts:
            if v.decision is Decision.BLOCK:
                for category in v.categories or ("none",):
                    self.blocks.labels(check, category, stage).inc()

    def watch_queue(self, queued: Callable[[], int]) -> None:
        """Read ``queue_depth`` from ``queued()`` at scrape time (e.g. a limiter's ``queued``).

        Pull, not push: the hot path pays nothing and the gauge can never go stale.
        """
        self._pull(self.queue_depth, lambda: float(queued()))

    def _pull(self, gauge: Any, read: Callable[[], float]) -> None:
        if not self._multiprocess:
            gauge.set_function(read)
            return
        self._pulled.append((gauge, read))
        if self._poller is None:
            self._poller = threading.Thread(
                target=self._poll, name="infershield-metrics-poll", daemon=True
            )
            self._poller.start()

    def _poll(self) -> None:
        while not self._stop_poll.wait(PULL_INTERVAL_S):
            for gauge, read in list(self._pulled):
                try:
                    gauge.set(read())
                except Exception:  # a gauge must never take the process down
                    continue

    def close(self) -> None:
        """Stop the poller thread (multiprocess mode only has one)."""
        self._stop_poll.set()

    def watch_breaker(self, upstream: str, state: Callable[[], object]) -> None:
        """Read the breaker gauge from ``state()`` (``closed``/``half_open``/``open``, or an
        enum with those values, like ``limits.BreakerState``) at scrape time.

        Transitions are counted only through :meth:`set_breaker_state`.
        """

        def read() -> float:
            st = state()
            return float(BREAKER_VALUES.get(str(getattr(st, "value", st)), -1))

        self._pull(self.breaker_state.labels(upstream), read)

    def set_breaker_state(self, upstream: str, state: BreakerState) -> None:
        """Record the upstream circuit breaker's state (and count the transition)."""
        if self._breaker_last.get(upstream, "closed") != state:  # count real transitions only
            self.breaker_transitions.labels(upstream, state).inc()
        self._breaker_last[upstream] = state
        self.breaker_state.labels(upstream).set(BREAKER_VALUES[state])


# --------------------------------------------------------------------------- process-wide

_active: Metrics | None = None
_lock = threading.Lock()


def install(metrics: Metrics | None) -> Metrics | None:
    """Make ``metrics`` the process-wide instance instrumentation records into; return the old.

    Nothing is recorded while none is installed (``infershield scan`` pays nothing).
    """
    global _active
    with _lock:
        old, _active = _active, metrics
    return old


def active() -> Metrics | None:
    return _active


# --------------------------------------------------------------------------- supervisor


class SupervisorMetrics:
    """The supervisor's own series (``server.processes`` > 1), served beside the children's
    summed ones. Read from the supervisor when scraped: it serves no calls and writes no
    multiprocess file."""

    def __init__(self, restarts: Callable[[], int]) -> None:
        self._restarts = restarts

    def collect(self) -> Iterable[CounterMetricFamily]:
        yield CounterMetricFamily(
            f"{PREFIX}_process_restarts",
            "Serving processes the supervisor restarted after they exited.",
            value=self._restarts(),
        )


# --------------------------------------------------------------------------- HTTP endpoint


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; ``port`` is the bound one (useful with port 0)."""

    host: str
    port: int
    _httpd: object
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()  # type: ignore[attr-defined]
        self._httpd.server_close()  # type: ignore[attr-defined]
        self._thread.join(timeout=5)


def start_metrics_server(metrics: Metrics | CollectorRegistry, listen: str) -> MetricsServer:
    """Serve ``metrics`` (or a registry) as Prometheus text on ``listen`` (``HOST:PORT``;
    port 0 picks one)."""
    registry = metrics.registry if isinstance(metrics, Metrics) else metrics
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"server.metrics_listen: expected HOST:PORT, got {listen!r}")
    host = host.strip("[]")
    try:
        httpd, thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"server.metrics_listen: cannot listen on {listen}: {exc.strerror}"
        ) from None
    return MetricsServer(host, httpd.server_port, httpd, thread)
