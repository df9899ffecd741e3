"""A blocked request through a real server lands in the audit log, chained and text-free."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from infershield.v1 import firewall_pb2 as fpb
from infershield.v1 import firewall_pb2_grpc as fpb_grpc

from firewall_support import INJECTION, TritonHandle, config_data, free_port
from infershield.audit import verify

pytestmark = pytest.mark.e2e


def test_blocked_infer_is_audited(
    triton: TritonHandle,
    start_firewall: Callable[..., int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv("INFERSHIELD_TEST_AUDIT_KEY", "k3y")
    port = start_firewall(
        config_data(
            f"127.0.0.1:{free_port()}",
            upstream=f"triton://{triton.url}",
            audit={"path": str(log), "key_env": "INFERSHIELD_TEST_AUDIT_KEY"},
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        api = fpb_grpc.FirewallStub(ch)
        api.Infer(fpb.InferRequest(model="echo", prompt="hello there"), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            api.Infer(fpb.InferRequest(model="echo", prompt=INJECTION), timeout=10)
        e: Any = err.value
        assert e.code() is grpc.StatusCode.PERMISSION_DENIED
    rep = verify(log, key=b"k3y")
    assert rep.ok and rep.records == 1  # allowed requests are not recorded by default
    text = log.read_text()
    assert INJECTION not in text
    assert '"decision":"block"' in text and '"rpc":"Infer"' in text and '"stage":"input"' in text


def test_input_redaction_reaches_the_model_and_audits_counts_only(
    triton: TritonHandle,
    start_firewall: Callable[..., int],
    tmp_path: Path,
) -> None:
    log = tmp_path / "audit.jsonl"
    # Input screening only (allow_empty: an output stage with no check is on purpose here).
    policy = {"input": [{"type": "secrets"}, {"type": "pii"}], "output": [], "allow_empty": True}
    port = start_firewall(
        config_data(
            f"127.0.0.1:{free_port()}",
            upstream=f"triton://{triton.url}",
            policy=policy,
            audit={"path": str(log)},
        )
    )
    values = ("+44 20 7946 0958", "ana@example.org", "536-22-1234",
              "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")
    prompt = (f"Call {values[0]} or mail {values[1]}; SSN {values[2]}; "
              f"token {values[3]}.")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = fpb_grpc.FirewallStub(ch).Infer(
            fpb.InferRequest(model="echo", prompt=prompt), timeout=10
        )
    echoed = " ".join(t for out in resp.outputs for t in out.text)
    for v in values:
        assert v not in echoed  # the model only ever saw the redacted prompt
    assert "[REDACTED:phone]" in echoed and "[REDACTED:github_token]" in echoed
    text = log.read_text()
    for v in values:
        assert v not in text
    assert verify(log).ok
    checks = {c["name"]: c for line in text.splitlines() for c in json.loads(line)["checks"]}
    assert checks["pii"]["counts"] == {"email": 1, "phone": 1, "us_ssn": 1}
    assert checks["secrets"]["counts"] == {"github_token": 1}
