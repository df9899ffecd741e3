"""The tenant in metrics (bounded labels), spans and audit records."""

from __future__ import annotations

from pathlib import Path

from infershield.audit import AuditLog
from infershield.auth.access import Identity
from infershield.pipeline import PipelineResult
from infershield.telemetry.metrics import MAX_TENANT_LABELS, Metrics
from infershield.verdict import Decision, Verdict


def test_tenant_labels_are_bounded() -> None:
    m = Metrics()
    for i in range(MAX_TENANT_LABELS + 50):
        m.observe_tenant(f"t{i}", "OK")
    m.observe_tenant("t0", "OK")
    samples = {
        s.labels["tenant"]: s.value
        for metric in m.tenant_requests.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    }
    assert len(samples) == MAX_TENANT_LABELS + 1
    assert samples["other"] == 50 and samples["t0"] == 2


def test_identity_caller_is_the_tenant_or_the_address() -> None:
    keyed = Identity("acme", frozenset(), None, "key", "k1", "ipv4:10.0.0.1")
    anon = Identity("anonymous", frozenset(), None, "anonymous", "", "ipv4:10.0.0.2")
    assert keyed.caller == "acme" and anon.caller == "ipv4:10.0.0.2"


def test_audit_records_the_tenant_key_and_full_reason(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    v = Verdict(
        "signatures", Decision.BLOCK, score=0.9, reason="matched rules inj-001",
        categories=("injection",), details=(("rules", "inj-001"),),
    )
    log.record_results(
        [("text", PipelineResult(Decision.BLOCK, 0.9, (v,), "text", 0.1))],
        stage="input",
        caller="acme",
        key_id="k1",
    )
    log.close()
    text = (tmp_path / "a.jsonl").read_text()
    assert '"caller":"acme"' in text and '"key_id":"k1"' in text
    assert '"reason":"matched rules inj-001"' in text and '"rules":"inj-001"' in text
