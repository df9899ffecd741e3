"""Metrics: every series is scraped over HTTP from a live endpoint on a free port."""

import asyncio
import logging
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infershield.checks.base import Check, CheckContext
from infershield.config import Config, ServerConfig, TelemetryConfig
from infershield.errors import ConfigError, LimitExceeded
from infershield.pipeline import Pipeline, Step
from infershield.telemetry import (
    Metrics,
    current_rpc,
    metrics,
    rpc_scope,
    set_rpc_status,
    setup_telemetry,
    start_metrics_server,
    upstream_timer,
)
from infershield.verdict import Verdict


class Keyword(Check):
    def __init__(self, name: str, word: str, categories: tuple[str, ...]) -> None:
        super().__init__(name)
        self.word = word
        self.cats = categories

    def check(self, ctx: CheckContext) -> Verdict:
        if self.word in ctx.text:
            return self.block("matched", categories=self.cats)
        return self.allow()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    m = Metrics()
    server = start_metrics_server(m, "127.0.0.1:0")
    try:
        yield m, server.url
    finally:
        server.close()


def test_every_documented_series_is_scraped(served: tuple[Metrics, str]) -> None:
    m, url = served
    m.observe_request(rpc="ModelInfer", model="llm", decision="block",
                      code="PERMISSION_DENIED", seconds=0.004)
    m.observe_request(rpc="ModelInfer", model="llm", decision="allow", code="OK", seconds=0.002)
    m.observe_stage("upstream", 0.0015)
    m.queue_depth.set(3)
    m.in_flight.inc()
    m.batch_size.labels("request").observe(4)
    m.worker_restarts.inc()
    m.rate_limited.labels("max_concurrency").inc(2)
    m.quarantines.labels("crash_loop").inc()
    m.upstream_errors.labels("UNAVAILABLE").inc()
    m.set_breaker_state("triton:8001", "open")
    m.set_breaker_state("triton:8001", "open")  # no transition
    m.set_breaker_state("triton:8001", "half_open")

    s = scrape(url)
    req = "infershield_requests_total"
    assert value(s, req, rpc="ModelInfer", model="llm", decision="block",
                 code="PERMISSION_DENIED") == 1
    assert value(s, req, rpc="ModelInfer", model="llm", decision="allow", code="OK") == 1
    hist = "infershield_stage_duration_seconds"
    assert value(s, f"{hist}_count", stage="total") == 2
    assert value(s, f"{hist}_sum", stage="total") == pytest.approx(0.006)
    assert value(s, f"{hist}_bucket", stage="upstream", le="0.0025") == 1
    assert value(s, f"{hist}_bucket", stage="upstream", le="0.001") == 0
    assert value(s, "infershield_queue_depth") == 3
    assert value(s, "infershield_in_flight_requests") == 1
    assert value(s, "infershield_batch_size_count", component="request") == 1
    assert value(s, "infershield_worker_restarts_total") == 1
    assert value(s, "infershield_rate_limit_rejections_total", limit="max_concurrency") == 2
    assert value(s, "infershield_quarantines_total", reason="crash_loop") == 1
    assert value(s, "infershield_upstream_errors_total", code="UNAVAILABLE") == 1
    assert value(s, "infershield_upstream_circuit_state", upstream="triton:8001") == 1
    trans = "infershield_upstream_circuit_transitions_total"
    assert value(s, trans, upstream="triton:8001", state="open") == 1
    assert value(s, trans, upstream="triton:8001", state="half_open") == 1


def test_pipeline_records_blocks_by_check_and_category(served: tuple[Metrics, str]) -> None:
    m, url = served
    old = metrics.install(m)
    try:
        p = Pipeline([
            Step(Keyword("signatures", "evil", ("injection", "jailbreak"))),
            Step(Keyword("length", "long", ())),
        ])
        p.run_batch([CheckContext("evil"), CheckContext("evil long"), CheckContext("ok")])
        p.run(CheckContext("fine", stage="output"))
    finally:
        metrics.install(old)
    s = scrape(url)
    blocks = "infershield_blocks_total"
    for cat in ("injection", "jailbreak"):
        assert value(s, blocks, check="signatures", category=cat, stage="input") == 2
    assert value(s, blocks, check="length", category="none", stage="input") == 1
    checks = "infershield_check_duration_seconds_count"
    # One observation per check per batch, not per text.
    assert value(s, checks, check="signatures", stage="input") == 1
    assert value(s, checks, check="signatures", stage="output") == 1


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.queue_depth.set(5)
    assert b.registry.get_sample_value("infershield_queue_depth") == 0
    assert a.registry.get_sample_value("infershield_queue_depth") == 5


def test_nothing_is_recorded_without_an_installed_instance() -> None:
    m = Metrics()
    assert metrics.active() is None
    Pipeline([Step(Keyword("k", "x", ()))]).run(CheckContext("x"))
    assert m.registry.get_sample_value(
        "infershield_blocks_total", {"check": "k", "category": "none", "stage": "input"}
    ) is None


@pytest.mark.parametrize("listen", ["nonsense", ":9100", "host:port"])
def test_bad_listen_address(listen: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.metrics_listen"):
        start_metrics_server(Metrics(), listen)


def test_port_in_use_is_a_config_error(served: tuple[Metrics, str]) -> None:
    _, url = served
    port = url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(ConfigError, match="cannot listen"):
        start_metrics_server(Metrics(), f"127.0.0.1:{port}")


def test_setup_telemetry_serves_metrics_and_closes() -> None:
    cfg = Config(server=ServerConfig(metrics_listen="127.0.0.1:0"),
                 telemetry=TelemetryConfig(traces_exporter="none"))
    tel = setup_telemetry(cfg, logging=False)
    try:
        assert tel.metrics_server is not None
        assert metrics.active() is tel.metrics
        tel.metrics.queue_depth.set(7)
        assert value(scrape(tel.metrics_server.url), "infershield_queue_depth") == 7
    finally:
        tel.close()
    assert metrics.active() is None


# --------------------------------------------------------------------------- per-RPC recording

SCAN = "/infershield.v1.Firewall/Scan"


class _Req:
    model_name = "llm"


@pytest.fixture
def installed() -> Iterator[Metrics]:
    m = Metrics()
    old = metrics.install(m)
    try:
        yield m
    finally:
        metrics.install(old)


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_rpc_scope_records_request_stage_and_decision(installed: Metrics) -> None:
    pipeline = Pipeline([Step(Keyword("signatures", "evil", ("injection",)))])

    async def handler() -> None:
        with rpc_scope(SCAN, [], _Req()) as rpc:
            assert sample(installed, "infershield_in_flight_requests") == 1
            # The pipeline runs off the event loop; the RPC scope follows (contextvars).
            await asyncio.to_thread(pipeline.run_batch, [CheckContext("evil"), CheckContext("ok")])
            with upstream_timer():
                await asyncio.sleep(0.01)
            set_rpc_status(rpc, grpc.StatusCode.PERMISSION_DENIED, "blocked")

    asyncio.run(handler())
    assert sample(installed, "infershield_requests_total", rpc="Scan", model="llm",
                  decision="block", code="PERMISSION_DENIED") == 1
    assert sample(installed, "infershield_in_flight_requests") == 0
    for stage in ("input_checks", "upstream", "total"):
        assert sample(installed, "infershield_stage_duration_seconds_count", stage=stage) == 1
    up = sample(installed, "infershield_stage_duration_seconds_sum", stage="upstream")
    assert up is not None and up >= 0.01
    assert sample(installed, "infershield_batch_size_sum", component="request") == 2


def test_rpc_scope_model_from_screening_and_no_decision_when_unscreened(
    installed: Metrics,
) -> None:
    with rpc_scope(SCAN, None) as rpc:
        Pipeline([]).run(CheckContext("hi", model="from-ctx"))
        assert current_rpc() is rpc
    with rpc_scope("/inference.GRPCInferenceService/ServerLive", None):
        pass
    assert current_rpc() is None
    assert sample(installed, "infershield_requests_total", rpc="Scan", model="from-ctx",
                  decision="allow", code="OK") == 1
    assert sample(installed, "infershield_requests_total", rpc="ServerLive", model="-",
                  decision="none", code="OK") == 1


def test_limit_rejections_are_counted_by_limit(installed: Metrics) -> None:
    exc = LimitExceeded("too many requests", limit="max_concurrency")
    with rpc_scope(SCAN, None) as rpc:
        set_rpc_status(rpc, exc.grpc_code, exc.message, error=exc)
    assert sample(installed, "infershield_rate_limit_rejections_total",
                  limit="max_concurrency") == 1
    assert sample(installed, "infershield_requests_total", rpc="Scan", model="-",
                  decision="none", code="RESOURCE_EXHAUSTED") == 1


def test_unknown_models_do_not_mint_label_values(installed: Metrics) -> None:
    class Req:
        model_name = "no-such-model-7f3a"

    with rpc_scope("/inference.GRPCInferenceService/ModelInfer", None, Req()) as rpc:
        set_rpc_status(rpc, grpc.StatusCode.NOT_FOUND, "unknown model")
    assert sample(installed, "infershield_requests_total", rpc="ModelInfer", model="-",
                  decision="none", code="NOT_FOUND") == 1
    assert sample(installed, "infershield_requests_total", rpc="ModelInfer",
                  model=Req.model_name, decision="none", code="NOT_FOUND") is None


@pytest.mark.parametrize(
    ("exc", "code"), [(RuntimeError("bug"), "UNKNOWN"), (asyncio.CancelledError(), "CANCELLED")]
)
def test_an_rpc_ending_without_a_status(installed: Metrics, exc: BaseException,
                                        code: str) -> None:
    with pytest.raises(type(exc)), rpc_scope(SCAN, None):
        raise exc
    assert sample(installed, "infershield_requests_total", rpc="Scan", model="-",
                  decision="none", code=code) == 1


def test_watched_gauges_are_read_at_scrape_time(served: tuple[Metrics, str]) -> None:
    import enum

    class State(str, enum.Enum):  # like limits.BreakerState
        CLOSED = "closed"
        OPEN = "open"

    m, url = served
    queue = [1, 2, 3]
    state = [State.CLOSED]
    m.watch_queue(lambda: len(queue))
    m.watch_breaker("triton:8001", lambda: state[0])
    s = scrape(url)
    assert value(s, "infershield_queue_depth") == 3
    assert value(s, "infershield_upstream_circuit_state", upstream="triton:8001") == 0
    queue.clear()
    state[0] = State.OPEN
    s = scrape(url)
    assert value(s, "infershield_queue_depth") == 0
    assert value(s, "infershield_upstream_circuit_state", upstream="triton:8001") == 2


def test_a_stream_lifetime_is_not_request_latency() -> None:
    m = Metrics()
    m.observe_request(rpc="ModelInfer", model="llm", decision="allow", code="OK", seconds=0.002)
    m.observe_request(rpc="ModelStreamInfer", model="llm", decision="allow", code="OK",
                      seconds=600.0)
    assert sample(m, "infershield_stage_duration_seconds_count", stage="total") == 1
    assert sample(m, "infershield_stage_duration_seconds_sum", stage="total") == 0.002
    assert sample(m, "infershield_requests_total", rpc="ModelStreamInfer", model="llm",
                  decision="allow", code="OK") == 1


def test_metrics_are_on_by_default_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import infershield.telemetry as telemetry

    assert ServerConfig().metrics_listen == "auto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    monkeypatch.setattr(telemetry, "DEFAULT_METRICS_LISTEN", f"127.0.0.1:{free}")
    tel = setup_telemetry(Config(telemetry=TelemetryConfig(traces_exporter="none")),
                          logging=False)
    try:
        assert tel.metrics_server is not None
        assert tel.metrics_server.url == f"http://127.0.0.1:{free}/metrics"
    finally:
        tel.close()


def test_a_taken_default_port_warns_instead_of_failing(
    served: tuple[Metrics, str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import infershield.telemetry as telemetry

    _, url = served
    taken = url.removeprefix("http://").split("/")[0]
    monkeypatch.setattr(telemetry, "DEFAULT_METRICS_LISTEN", taken)
    with caplog.at_level(logging.WARNING, logger="infershield.telemetry"):
        tel = setup_telemetry(Config(telemetry=TelemetryConfig(traces_exporter="none")),
                              logging=False)
    try:
        assert tel.metrics_server is None
        assert any("metrics not served" in r.getMessage() for r in caplog.records)
    finally:
        tel.close()
    # Asked for explicitly, the same port is a start-up error.
    with pytest.raises(ConfigError, match="cannot listen"):
        setup_telemetry(Config(server=ServerConfig(metrics_listen=taken),
                               telemetry=TelemetryConfig(traces_exporter="none")),
                        logging=False)
    metrics.install(None)


def test_an_empty_metrics_listen_turns_the_endpoint_off() -> None:
    tel = setup_telemetry(Config(server=ServerConfig(metrics_listen=""),
                                 telemetry=TelemetryConfig(traces_exporter="none")),
                          logging=False)
    try:
        assert tel.metrics_server is None
    finally:
        tel.close()


def test_pulled_gauges_are_pushed_in_multiprocess_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (server.processes > 1) the supervisor reads only the
    children's files, never a set_function: a poller sets the pulled gauges instead."""
    import infershield.telemetry.metrics as metrics_mod

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")
    monkeypatch.setattr(metrics_mod, "PULL_INTERVAL_S", 0.01)
    m = Metrics()  # this process's values stay in memory: the module was imported without it
    depth = [5]
    m.watch_queue(lambda: depth[0])
    try:
        assert m._poller is not None
        for _ in range(500):
            if m.queue_depth._value.get() == 5:
                break
            time.sleep(0.01)
        assert m.queue_depth._value.get() == 5
    finally:
        m.close()
        m._poller.join(5)
    assert not m._poller.is_alive()
