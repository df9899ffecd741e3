"""Anomaly responses: signed webhook with retries and a bounded queue, quarantine, audit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infershield.abuse.anomaly import AnomalyEvent
from infershield.abuse.response import Responder, WebhookSender, sign
from infershield.abuse.store import MemoryStore
from infershield.audit import AuditLog, verify
from infershield.config import AnomalyConfig, WebhookConfig
from infershield.errors import ConfigError
from infershield.telemetry import metrics
from webhook_support import WebhookReceiver

SECRET = b"s3cret"
EVENT = AnomalyEvent("tenant-a", "input_size", 5000.0, 500.0, 50.0, 90.0)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


@pytest.fixture
def m() -> Iterator[metrics.Metrics]:
    mm = metrics.Metrics()
    old = metrics.install(mm)
    yield mm
    metrics.install(old)


def test_signature_covers_timestamp_and_body() -> None:
    a = sign(SECRET, "1.0", b"{}")
    assert a.startswith("sha256=") and a != sign(SECRET, "2.0", b"{}")
    assert a != sign(SECRET, "1.0", b"{ }") and a != sign(b"other", "1.0", b"{}")


def test_webhook_retries_until_delivered(receiver: WebhookReceiver, m: metrics.Metrics) -> None:
    receiver.fail_first = 2
    results: list[tuple[str, int]] = []
    sender = WebhookSender(
        WebhookConfig(url=receiver.url, backoff_s=0.01, retries=3),
        SECRET,
        on_result=lambda p, outcome, n: results.append((outcome, n)),
    )
    try:
        assert sender.submit({"feature": "x"})
        got = receiver.wait_for(1)
    finally:
        sender.close()
    assert len(got) == 1 and got[0].signature_ok and got[0].body == {"feature": "x"}
    assert receiver.attempts == 3 and results == [("sent", 3)]
    assert m.registry.get_sample_value("infershield_alerts_total", {"outcome": "sent"}) == 1


def test_webhook_gives_up_after_retries(m: metrics.Metrics) -> None:
    from firewall_support import free_port

    results: list[str] = []
    sender = WebhookSender(
        WebhookConfig(url=f"http://127.0.0.1:{free_port()}/", backoff_s=0.01, retries=1),
        SECRET,
        on_result=lambda p, outcome, n: results.append(outcome),
    )
    sender.submit({"a": 1})
    sender.close(timeout=10)
    assert results == ["failed"]
    assert m.registry.get_sample_value("infershield_alerts_total", {"outcome": "failed"}) == 1


def test_webhook_queue_is_bounded(m: metrics.Metrics) -> None:
    import threading

    gate = threading.Event()
    sender = WebhookSender(WebhookConfig(url="http://127.0.0.1:9/", queue_size=2), SECRET)
    sender._deliver = lambda payload: (gate.wait(10), ("sent", 1))[1]  # type: ignore[method-assign]
    try:
        sender.submit({"n": 0})  # taken by the thread, which then blocks
        for _ in range(100):
            if sender._queue.empty():
                break
            asyncio.run(asyncio.sleep(0.01))
        assert sender.submit({"n": 1}) and sender.submit({"n": 2})
        assert not sender.submit({"n": 3})
        assert m.registry.get_sample_value("infershield_alerts_total", {"outcome": "dropped"}) == 1
    finally:
        gate.set()
        sender.close()


def test_webhook_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET_ENV", raising=False)
    with pytest.raises(ConfigError, match=r"anomaly\.webhook\.secret_env"):
        WebhookSender.from_config(
            WebhookConfig(url="http://127.0.0.1:1/", secret_env="NO_SUCH_SECRET_ENV"),
            on_result=None,
        )


class Limits:
    def __init__(self) -> None:
        self.store = MemoryStore()

    async def quarantine(self, caller: str, seconds: float) -> None:
        await self.store.quarantine(caller, seconds)


def test_responder_alerts_quarantines_and_audits(
    receiver: WebhookReceiver, tmp_path: Path, m: metrics.Metrics
) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    cfg = AnomalyConfig(
        enabled=True,
        responses={"input_size": ("log", "webhook", "quarantine")},
        quarantine_s=120,
        webhook=WebhookConfig(url=receiver.url),
    )
    limits = Limits()
    responder = Responder(cfg, audit=audit, quarantiner=limits, replica="r1")
    responder.webhook = WebhookSender(cfg.webhook, SECRET, on_result=responder.alert_result)

    async def main() -> None:
        await responder.handle(EVENT)
        assert 119 < await limits.store.quarantined_for("tenant-a") <= 120
        other = AnomalyEvent("tenant-b", "score", 1.0, 0.1, 0.05, 18.0)
        await responder.handle(other)  # default response: log only
        assert await limits.store.quarantined_for("tenant-b") == 0

    asyncio.run(main())
    got = receiver.wait_for(1)
    responder.close()
    audit.close()
    assert got[0].signature_ok
    body = got[0].body
    assert body["caller"] == "tenant-a" and body["feature"] == "input_size"
    assert body["value"] == 5000 and body["baseline_mean"] == 500 and body["replica"] == "r1"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    kinds = [(r["event"], r.get("caller")) for r in records]
    assert ("anomaly", "tenant-a") in kinds and ("quarantine", "tenant-a") in kinds
    assert ("alert", "tenant-a") in kinds and ("anomaly", "tenant-b") in kinds
    assert verify(tmp_path / "audit.jsonl").ok
    get = m.registry.get_sample_value
    assert get("infershield_anomalies_total", {"feature": "input_size"}) == 1
    assert get("infershield_anomalies_total", {"feature": "score"}) == 1
    assert get("infershield_quarantines_total", {"reason": "anomaly_input_size"}) == 1


def test_responder_survives_a_failing_quarantine(tmp_path: Path) -> None:
    from infershield.errors import LimitExceeded

    class Down:
        async def quarantine(self, caller: str, seconds: float) -> None:
            raise LimitExceeded("store unreachable", limit="ratelimit_store")

    audit = AuditLog(tmp_path / "a.jsonl")
    cfg = AnomalyConfig(enabled=True, default_response=("quarantine",))
    asyncio.run(Responder(cfg, audit=audit, quarantiner=Down()).handle(EVENT))
    audit.close()
    last: dict[str, Any] = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "quarantine" and last["ok"] is False
