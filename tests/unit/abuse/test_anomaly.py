"""Per-caller EWMA baselines: a 10x jump is an anomaly, steady traffic for 10 minutes is not."""

from __future__ import annotations

import random

import pytest

from infershield.abuse.anomaly import AnomalyDetector, Ewma
from infershield.config import AnomalyConfig


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def steady(
    det: AnomalyDetector,
    clock: FakeClock,
    caller: str,
    seconds: float,
    rng: random.Random,
    block_p: float = 0.02,
) -> list[object]:
    """Benign traffic: ~2 calls/s with jitter, sizes 400-600 bytes, scores 0-0.2, an
    occasional block (2%) and error (1%)."""
    events: list[object] = []
    end = clock.t + seconds
    while clock.t < end:
        clock.t += rng.uniform(0.3, 0.7)
        events += det.observe(
            caller,
            input_bytes=rng.randint(400, 600),
            score=rng.uniform(0.0, 0.2),
            blocked=rng.random() < block_p,
            error=rng.random() < 0.01,
        )
    return events


def test_ewma_tracks_mean_and_variance() -> None:
    e = Ewma(alpha=0.1)
    for x in [10.0] * 200:
        e.update(x)
    assert e.mean == pytest.approx(10.0) and e.var == pytest.approx(0.0)
    rng = random.Random(1)
    e = Ewma(alpha=0.01)
    for _ in range(20000):
        e.update(rng.gauss(5.0, 2.0))
    assert e.mean == pytest.approx(5.0, abs=0.5)
    assert e.var == pytest.approx(4.0, rel=0.3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_steady_traffic_for_ten_minutes_raises_nothing(seed: int) -> None:
    clock = FakeClock()
    det = AnomalyDetector(AnomalyConfig(enabled=True), clock=clock)
    rng = random.Random(seed)
    assert steady(det, clock, "tenant-a", 600.0, rng) == []
    b = det.baseline("tenant-a", "input_size")
    assert b is not None and b.n > 1000 and 450 < b.mean < 550


def test_request_size_jump_of_10x_is_an_anomaly() -> None:
    clock = FakeClock()
    det = AnomalyDetector(AnomalyConfig(enabled=True), clock=clock)
    rng = random.Random(7)
    assert steady(det, clock, "a", 120.0, rng) == []
    steady(det, clock, "b", 120.0, rng)
    clock.t += 0.5
    events = det.observe("a", input_bytes=5000, score=0.1)
    assert [e.feature for e in events] == ["input_size"]
    ev = events[0]
    assert ev.caller == "a" and ev.value == 5000 and 450 < ev.mean < 550 and ev.z > 6
    assert ev.as_dict()["baseline_mean"] == pytest.approx(ev.mean, abs=1e-5)
    # The outlier did not move the baseline, and the cooldown holds the next one back.
    b = det.baseline("a", "input_size")
    assert b is not None and b.mean < 600
    clock.t += 0.5
    assert det.observe("a", input_bytes=5000, score=0.1) == []
    clock.t += 61
    assert [e.feature for e in det.observe("a", input_bytes=5000, score=0.1)] == ["input_size"]
    # Another caller's baseline is its own.
    assert det.observe("b", input_bytes=550, score=0.1) == []


def test_nothing_before_the_warm_up() -> None:
    clock = FakeClock()
    det = AnomalyDetector(AnomalyConfig(enabled=True, warmup=20), clock=clock)
    for _ in range(19):
        clock.t += 1
        assert det.observe("a", input_bytes=100) == []
    clock.t += 1
    assert det.observe("a", input_bytes=100_000) == []  # 20th sample: still warming up
    clock.t += 1
    assert det.observe("a", input_bytes=100) == []


def test_block_rate_and_request_rate_per_window() -> None:
    clock = FakeClock()
    det = AnomalyDetector(AnomalyConfig(enabled=True, window_s=1.0, warmup=10), clock=clock)
    rng = random.Random(3)
    steady(det, clock, "a", 60.0, rng, block_p=0.0)
    events = []
    for _ in range(50):  # a campaign: 50 calls/s, all blocked
        clock.t += 0.02
        events += det.observe("a", input_bytes=500, score=1.0, blocked=True)
    clock.t += 0.02
    events += det.observe("a", input_bytes=500, score=1.0, blocked=True)  # closes the window
    features = {e.feature for e in events}
    assert {"score", "block_rate", "request_rate"} <= features


def test_callers_are_bounded() -> None:
    det = AnomalyDetector(AnomalyConfig(enabled=True, max_callers=5), clock=FakeClock())
    for i in range(20):
        det.observe(f"c{i}", input_bytes=1)
    assert len(det) == 5
