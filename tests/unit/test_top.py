"""``infershield top``: quantiles from buckets, and one snapshot of a live endpoint."""

import math
import re
import socket
import time
from collections.abc import Iterator

import pytest

from infershield import top
from infershield.cli import main
from infershield.telemetry import Metrics, start_metrics_server
from infershield.telemetry.metrics import MetricsServer
from infershield.verdict import Decision, Verdict

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.001, 0), (0.0025, 10), (INF, 10)], 0.00175),
        (0.99, [(0.001, 0), (0.0025, 10), (INF, 10)], 0.001 + 0.0015 * 0.99),
        (0.5, [(0.001, 5), (0.0025, 10), (INF, 10)], 0.001),
        (0.5, [(0.1, 2), (1.0, 4), (INF, 10)], 1.0),  # rank in +Inf: the highest finite bound
        (0.25, [(0.1, 0), (0.2, 4), (INF, 4)], 0.125),
        (0.5, [(0.1, 0), (INF, 0)], None),
        (0.5, [], None),
    ],
)
def test_histogram_quantile_matches_promql(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    got = top.histogram_quantile(q, buckets)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.fixture
def endpoint() -> Iterator[tuple[Metrics, MetricsServer]]:
    m = Metrics()
    server = start_metrics_server(m, "127.0.0.1:0")
    try:
        yield m, server
    finally:
        server.close()


def _traffic(m: Metrics, n_allow: int, n_block: int) -> None:
    for _ in range(n_allow):
        m.observe_request(rpc="ModelInfer", model="llm", decision="allow", code="OK",
                          seconds=0.002)
        m.observe_stage("upstream", 0.0015)
    for _ in range(n_block):
        m.observe_request(rpc="ModelInfer", model="llm", decision="block",
                          code="PERMISSION_DENIED", seconds=0.0004)
        m.observe_check("signatures", "input",
                        [Verdict("signatures", Decision.BLOCK, categories=("injection",))],
                        0.0003)


def test_top_once_shows_rates_ratios_and_percentiles(
    endpoint: tuple[Metrics, MetricsServer], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    m, server = endpoint
    _traffic(m, 50, 0)  # before the window: counts in totals, not in the window's ratios
    m.queue_depth.set(4)
    m.set_breaker_state("triton:8001", "open")
    m.worker_restarts.inc()
    m.rate_limited.labels("max_concurrency").inc(3)
    real_sleep = time.sleep

    def sleep_with_traffic(seconds: float) -> None:
        _traffic(m, 30, 10)  # the window: 40 requests, 25% blocked
        real_sleep(seconds)

    monkeypatch.setattr(top.time, "sleep", sleep_with_traffic)
    rc = main(["top", "--metrics", server.url, "--once", "--interval", "0.2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert re.search(r"requests\s+[\d.]+/s\s+total 90\s+blocked 25\.0%\s+errors 0\.0%", out), out
    row = next(line for line in out.splitlines() if line.strip().startswith("ModelInfer"))
    assert row.split()[1:2] == ["llm"] and row.split()[3:] == ["90", "25.0%", "0.0%"]
    rate = float(row.split()[2].removesuffix("/s"))
    assert 40 / 0.5 < rate <= 40 / 0.2  # 40 requests over a window of at least 0.2s
    assert re.search(r"input signatures / injection\s+[\d.]+/s\s+10\b", out), out
    # Window latency: 30 requests at 2 ms and 10 at 0.4 ms -> p50 in the (1, 2.5] ms bucket.
    total = next(line for line in out.splitlines() if "stage total" in line).split()
    assert 1.0 < float(total[2]) <= 2.5 and total[-1] == "40"
    assert "stage upstream" in out and "check input/signatures" in out
    assert "queue 4" in out and "breaker triton:8001=open" in out
    assert "worker restarts 1" in out and "rate-limited 3 (max_concurrency=3)" in out


def test_top_once_without_interval_shows_totals(
    endpoint: tuple[Metrics, MetricsServer], capsys: pytest.CaptureFixture[str],
) -> None:
    m, server = endpoint
    _traffic(m, 3, 1)
    assert main(["top", "--metrics", server.url, "--once", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "totals since start" in out and "blocked 25.0%" in out and "(ratios since start)" in out
    assert re.search(r"stage total\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+4\*", out), out


def test_top_on_an_empty_endpoint(
    endpoint: tuple[Metrics, MetricsServer], capsys: pytest.CaptureFixture[str],
) -> None:
    _, server = endpoint
    assert main(["top", "--metrics", server.url, "--once", "--interval", "0"]) == 0
    out = capsys.readouterr().out
    assert "(no requests yet)" in out and "(no blocks)" in out and "(no observations)" in out


def test_top_unreachable_endpoint_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before top connects: nothing listens
    rc = main(["top", "--metrics", f"http://127.0.0.1:{port}/metrics", "--once"])
    assert rc == top.EXIT_UNREACHABLE
    assert "cannot scrape" in capsys.readouterr().err
