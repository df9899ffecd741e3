"""AbuseControl.call: admission, token charges through the call's context, and the detector
fed when the call ends, leading to a quarantine that later calls hit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from infershield.abuse import control
from infershield.abuse.control import AbuseControl, charge_tokens, current_call, estimate_tokens
from infershield.audit import AuditLog
from infershield.config import AnomalyConfig, Config, RateLimitConfig, RateSpec
from infershield.errors import Blocked, InvalidRequest, LimitExceeded, Quarantined


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, clock: FakeClock, **anomaly: Any) -> tuple[AbuseControl, AuditLog]:
    audit = AuditLog(tmp_path / "audit.jsonl")
    cfg = Config(
        ratelimit=RateLimitConfig(default=RateSpec(tokens_per_s=10, tokens_burst=100)),
        anomaly=AnomalyConfig(
            enabled=True,
            warmup=5,
            responses={"score": ("log", "quarantine")},
            quarantine_s=30,
            **anomaly,
        ),
    )
    return AbuseControl.from_config(cfg, audit=audit, clock=clock), audit


def test_call_exposes_its_info_and_charges_tokens(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        ctl, audit = make(tmp_path, clock)
        assert current_call() is None
        await charge_tokens("m", ["outside any call"], 5)  # a no-op
        async with ctl.call("tenant-a", model="m", request_id="r1") as info:
            assert current_call() is info and info.request_id == "r1"
            await charge_tokens("m", ["hello world"], 60)
            # The context reaches worker threads too (asyncio.to_thread copies it).
            assert await asyncio.to_thread(current_call) is info
            with pytest.raises(LimitExceeded) as ei:
                await charge_tokens("m", ["x" * 200], None)  # no tokenizer: ~4 bytes/token
            assert ei.value.limit == "tokens_per_s"
        assert current_call() is None
        assert info.input_tokens == 60 + 50 and info.input_bytes == 11 + 200
        audit.close()

    asyncio.run(main())


def test_estimate_tokens() -> None:
    assert [estimate_tokens(t) for t in ("", "abc", "abcd", "abcde", "é" * 4)] == [0, 1, 1, 2, 2]


def test_blocked_calls_raise_the_score_anomaly_and_quarantine(tmp_path: Path) -> None:
    async def main() -> None:
        clock = FakeClock()
        ctl, audit = make(tmp_path, clock)
        for _ in range(10):  # baseline: benign calls
            clock.t += 1
            async with ctl.call("a"):
                control.note_score(0.01)
        for _ in range(2):  # errors are counted but refusals do not feed the detector
            clock.t += 1
            with pytest.raises(InvalidRequest):
                async with ctl.call("a"):
                    raise InvalidRequest("bad tensor")
        clock.t += 1
        with pytest.raises(Blocked):
            async with ctl.call("a"):
                raise Blocked(check="signatures", reason="injection", score=0.99)
        with pytest.raises(Quarantined) as ei:
            async with ctl.call("a"):
                pass
        assert 29 < ei.value.retry_after_s <= 30
        async with ctl.call("b"):  # others unaffected
            pass
        clock.t += 31
        async with ctl.call("a"):
            pass
        await ctl.close()
        audit.close()

    asyncio.run(main())
    text = (tmp_path / "audit.jsonl").read_text()
    assert '"event":"anomaly"' in text and '"feature":"score"' in text
    assert '"event":"quarantine"' in text and '"caller":"a"' in text


def test_from_config_without_anomaly_has_no_detector() -> None:
    ctl = AbuseControl.from_config(Config())
    assert ctl.detector is None and ctl.responder is None and not ctl.limits.enabled
