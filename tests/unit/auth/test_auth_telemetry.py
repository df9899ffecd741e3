"""The tenant in metrics (bounded labels), spans and audit records."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_tenant_and_block_detail_go_on_the_span_not_the_address() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from infershield.config import TelemetryConfig
    from infershield.errors import Blocked
    from infershield.telemetry import setup_tracing, shutdown_tracing
    from infershield.telemetry.instrument import record_block, record_identity, rpc_scope

    exporter = InMemorySpanExporter()
    setup_tracing(TelemetryConfig(sample_ratio=1.0), env={}, exporter=exporter, set_global=False)
    try:
        with rpc_scope("/inference.GRPCInferenceService/ModelInfer", ()) as scope:
            record_identity(Identity("acme", frozenset(), None, "key", "k1", "ipv4:10.0.0.1"))
            record_block(
                Blocked(check="signatures", reason="matched inj-001", categories=("injection",),
                        details=(("rules", "inj-001"),))
            )
            assert scope.tenant == "acme"
        (span,) = exporter.get_finished_spans()
    finally:
        shutdown_tracing()
    attrs = dict(span.attributes or {})
    assert attrs["enduser.id"] == "acme" and attrs["infershield.key_id"] == "k1"
    assert attrs["infershield.blocked_by"] == "signatures"
    assert attrs["infershield.block.rules"] == "inj-001"
    assert "10.0.0.1" not in repr(attrs) and "matched inj-001" not in repr(attrs)


def test_open_listener_is_logged_and_keys_without_tls_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from infershield.config import AuthConfig, Config, ServerConfig
    from infershield.server.app import FirewallServer

    with caplog.at_level(logging.WARNING, logger="infershield.server.app"):
        FirewallServer(Config(server=ServerConfig(listen="0.0.0.0:0", insecure=True)))\
            ._warn_exposure()
    assert "no authentication" in caplog.text
    caplog.clear()
    from infershield.auth.keys import create_key

    auth = AuthConfig(keys_file=str(tmp_path / "k.json"), secret_file=str(tmp_path / "s"))
    create_key(auth, tenant="t", roles=["infer"], models=["*"])
    with caplog.at_level(logging.WARNING, logger="infershield.server.app"):
        FirewallServer(Config(server=ServerConfig(listen="0.0.0.0:0"), auth=auth))\
            ._warn_exposure()
    assert "plain text" in caplog.text


def test_the_dashboard_shows_tenants_and_refusals() -> None:
    dash = (Path(__file__).resolve().parents[3] / "dashboards" / "grafana" / "infershield.json")
    text = dash.read_text()
    assert "sum by (tenant, code) (rate(infershield_tenant_requests_total" in text
    assert "sum by (reason) (rate(infershield_auth_rejections_total" in text
