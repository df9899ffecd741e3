"""The own API (infershield.v1.Firewall: Infer and Scan) through a plain grpcio client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from infershield.v1 import firewall_pb2 as fpb
from infershield.v1 import firewall_pb2_grpc as fpb_grpc

from firewall_support import (
    INJECTION,
    TEST_POLICY,
    TritonHandle,
    config_data,
    free_port,
    write_config,
)
from infershield.server.app import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def channel(
    triton: TritonHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[grpc.Channel]:
    # A trusted deployment: blocked callers and Scan see the checks' reasons.
    cfg = write_config(
        tmp_path_factory.mktemp("own") / "config.yaml",
        config_data(
            f"127.0.0.1:{free_port()}",
            upstream=f"triton://{triton.url}",
            policy={**TEST_POLICY, "explain_blocks": True},
        ),
    )
    st = ServerThread(cfg)
    port = st.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    st.stop(grace=0.5)


def test_infer_prompt_returns_the_model_output(channel: grpc.Channel) -> None:
    api = fpb_grpc.FirewallStub(channel)
    resp = api.Infer(fpb.InferRequest(model="echo", prompt="hello there", id="x1"), timeout=10)
    assert resp.model == "echo" and resp.id == "x1"
    assert [(t.name, t.datatype, list(t.shape), list(t.text)) for t in resp.outputs] == [
        ("OUTPUT", "BYTES", [1, 1], ["echo: hello there"])
    ]
    assert not resp.input_scan.blocked and resp.input_scan.decision == "allow"
    assert len(resp.output_scans) == 1 and not resp.output_scans[0].blocked


def test_infer_chat_messages_are_screened(channel: grpc.Channel) -> None:
    api = fpb_grpc.FirewallStub(channel)
    msgs = fpb.ChatMessages(
        messages=[
            fpb.ChatMessage(role="system", content="be nice"),
            fpb.ChatMessage(role="user", content=INJECTION),
        ]
    )
    with pytest.raises(grpc.RpcError) as err:
        api.Infer(fpb.InferRequest(model="echo", messages=msgs), timeout=10)
    e: Any = err.value
    assert e.code() is grpc.StatusCode.PERMISSION_DENIED
    trailers = dict(e.trailing_metadata())
    assert trailers["infershield-blocked-by"] == "keywords"
    assert trailers["infershield-category"] == "injection"
    assert "matched blocked phrase" in trailers["infershield-reason"]


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (fpb.InferRequest(model="echo"), grpc.StatusCode.INVALID_ARGUMENT),
        (fpb.InferRequest(prompt="hi"), grpc.StatusCode.INVALID_ARGUMENT),
        (fpb.InferRequest(model="nope", prompt="hi"), grpc.StatusCode.NOT_FOUND),
    ],
    ids=["no input", "no model", "unknown model"],
)
def test_infer_bad_requests(
    channel: grpc.Channel, request_: fpb.InferRequest, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fpb_grpc.FirewallStub(channel).Infer(request_, timeout=10)
    assert err.value.code() is code  # type: ignore[attr-defined]


def test_scan_is_batched_and_matches_the_cli(channel: grpc.Channel, tmp_path: Any) -> None:
    texts = ["what time is it?", INJECTION, "call 555-0100"]
    resp = fpb_grpc.FirewallStub(channel).Scan(fpb.ScanRequest(texts=texts), timeout=10)
    assert [r.blocked for r in resp.results] == [False, True, False]
    assert [r.decision for r in resp.results] == ["allow", "block", "redact"]
    assert resp.results[1].verdicts[0].name == "keywords"
    assert resp.results[1].categories == ["injection"]
    assert resp.results[2].rewritten == "call [REDACTED]"
    assert not resp.results[0].HasField("rewritten")
    # The same verdict fields as `infershield scan`.
    cfg = tmp_path / "cli.yaml"
    write_config(cfg, config_data("127.0.0.1:1", upstream="triton://127.0.0.1:1"))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, firewall_support; from infershield.cli import main; sys.exit(main())",
            "scan",
            "--config",
            str(cfg),
            *texts,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])},
    )
    cli = [json.loads(line) for line in out.stdout.splitlines()]
    for got, want in zip(resp.results, cli, strict=True):
        assert got.blocked == want["blocked"] and got.decision == want["decision"]
        assert list(got.categories) == want["categories"]
        assert [(v.name, v.decision, v.status, v.reason) for v in got.verdicts] == [
            (v["name"], v["decision"], v["status"], v["reason"]) for v in want["verdicts"]
        ]


def test_health_service_reports_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "infershield.v1.Firewall"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
