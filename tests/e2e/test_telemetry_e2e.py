"""Traces and metrics of a real firewall: span trees for allowed, blocked and upstream-failed
requests, W3C context continued from the caller and propagated upstream, metrics scraped.

The firewall gets its tracing only from ``OTEL_*`` environment variables, as in production;
spans go over OTLP/gRPC to an in-test receiver on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from e2e.helpers import encode, stub, text_request
from firewall_support import INJECTION, config_data, free_port, write_config
from infershield.server.app import ServerThread
from infershield.telemetry import Telemetry, setup_telemetry
from infershield.telemetry.testing import OtlpReceiver, ReceivedSpan, children

pytestmark = pytest.mark.e2e

KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def caller_metadata(request_no: int) -> list[tuple[str, str]]:
    """A sampled W3C parent, one trace per request (the last hex digits differ)."""
    return [("traceparent", f"00-{trace_id(request_no)}-{CALLER_SPAN}-01")]


def trace_id(request_no: int) -> str:
    return TRACE_ID[:-2] + f"{request_no:02x}"


# --------------------------------------------------------------------------- a recording upstream


class RecordingTriton(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Just enough of Triton for one ``echo`` model; keeps the metadata of each ModelInfer."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.fail = False
        self._lock = threading.Lock()

    def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        r = pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="python")
        r.inputs.add(name="TEXT", datatype="BYTES", shape=[-1, 1])
        r.outputs.add(name="OUTPUT", datatype="BYTES", shape=[-1, 1])
        return r

    def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        r = pb.ModelConfigResponse()
        r.config.name = request.name
        r.config.max_batch_size = 16
        return r

    def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        with self._lock:
            self.seen.append({k: v for k, v in context.invocation_metadata()
                              if isinstance(v, str)})
        if self.fail:
            context.abort(grpc.StatusCode.INTERNAL, "model crashed")
        raw = request.raw_input_contents[0]
        elems, i = [], 0
        while i < len(raw):
            n = int.from_bytes(raw[i : i + 4], "little")
            elems.append(raw[i + 4 : i + 4 + n])
            i += 4 + n
        resp = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        resp.outputs.add(name="OUTPUT", datatype="BYTES", shape=[len(elems), 1])
        resp.raw_output_contents.append(encode([b"echo: " + e for e in elems]))
        return resp


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[RecordingTriton, int]]:
    servicer = RecordingTriton()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(grace=None)


# --------------------------------------------------------------------------- the firewall


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def otel_env(receiver: OtlpReceiver) -> Iterator[None]:
    """Only the standard variables: no telemetry section in the firewall's config."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": "infershield-e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def shield(
    otel_env: None, upstream: tuple[RecordingTriton, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Telemetry]]:
    """The firewall in front of the recording upstream, with telemetry as ``serve`` sets it up."""
    cfg = write_config(
        tmp_path_factory.mktemp("otel") / "config.yaml",
        config_data(
            f"127.0.0.1:{free_port()}",
            upstream=f"triton://127.0.0.1:{upstream[1]}",
            server={"metrics_listen": "127.0.0.1:0"},
        ),
    )
    tel = setup_telemetry(cfg, logging=False)
    st = ServerThread(cfg)
    port = st.start()
    try:
        yield f"127.0.0.1:{port}", tel
    finally:
        st.stop(grace=0.5)
        tel.close()


def spans_of(rx: OtlpReceiver, tid: str, n_min: int) -> list[ReceivedSpan]:
    def ready(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == tid]
        return any(s.kind == KIND_SERVER for s in mine) and len(mine) >= n_min

    return [s for s in rx.wait_for(ready) if s.trace_id == tid]


def root_of(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (root,) = [s for s in spans if s.kind == KIND_SERVER]
    return root


def assert_no_text(spans: list[ReceivedSpan], *texts: str) -> None:
    for s in spans:
        blob = repr(s.attributes) + s.status_message + s.name
        for t in texts:
            assert t not in blob, (s.name, t)


def test_allowed_request_span_tree_and_upstream_propagation(
    shield: tuple[str, Telemetry], upstream: tuple[RecordingTriton, int], receiver: OtlpReceiver,
) -> None:
    url, _ = shield
    recorder, _ = upstream
    prompt = "what is the capital of France?"
    ch, s = stub(url)
    with ch:
        resp = s.ModelInfer(text_request([prompt]), metadata=caller_metadata(1), timeout=30)
    assert resp.model_name == "echo"

    spans = spans_of(receiver, trace_id(1), 5)
    root = root_of(spans)
    assert root.name == "ModelInfer" and root.parent_span_id == CALLER_SPAN
    assert root.service_name == "infershield-e2e"
    assert root.attributes["rpc.grpc.status_code"] == 0
    assert root.attributes["infershield.model"] == "echo"
    assert root.attributes["infershield.decision"] == "allow"

    kids = children(spans, root)
    checks = [k for k in kids if k.kind == KIND_INTERNAL]
    assert [(c.name, c.attributes["infershield.stage"]) for c in checks] == [
        ("check keywords", "input"), ("check leaks", "output"),
        # Added to every output pipeline (allows when there is no system prompt or canary).
        ("check prompt_leak", "output"),
    ]
    for c in checks:
        assert c.attributes["infershield.check.decision"] == "allow"
        assert c.attributes["infershield.check.status"] == "ok"
        assert c.attributes["infershield.check.category"] == "none"
    (infer_up,) = [k for k in kids if k.name == "upstream ModelInfer"]
    assert infer_up.kind == KIND_CLIENT and infer_up.attributes["rpc.grpc.status_code"] == 0
    # Input checks end before the upstream call starts; output checks start after it ends.
    assert checks[0].end_ns <= infer_up.start_ns and infer_up.end_ns <= checks[1].start_ns
    assert root.start_ns <= checks[0].start_ns and checks[1].end_ns <= root.end_ns

    # Triton saw our client span as its parent, in the caller's trace.
    tp = recorder.seen[-1]["traceparent"]
    assert tp == f"00-{trace_id(1)}-{infer_up.span_id}-01"
    assert_no_text(spans, prompt, "echo: ")


def test_blocked_request_span_tree(
    shield: tuple[str, Telemetry], upstream: tuple[RecordingTriton, int], receiver: OtlpReceiver,
) -> None:
    url, _ = shield
    recorder, _ = upstream
    before = len(recorder.seen)
    ch, s = stub(url)
    with ch, pytest.raises(grpc.RpcError) as err:
        s.ModelInfer(text_request([INJECTION]), metadata=caller_metadata(2), timeout=30)
    assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert len(recorder.seen) == before  # never forwarded

    spans = spans_of(receiver, trace_id(2), 2)
    root = root_of(spans)
    assert root.status_code == STATUS_ERROR
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert root.attributes["infershield.decision"] == "block"
    kids = children(spans, root)
    assert not [k for k in kids if k.name == "upstream ModelInfer"]
    (check,) = [k for k in kids if k.kind == KIND_INTERNAL]
    assert check.name == "check keywords"
    assert check.attributes["infershield.check.decision"] == "block"
    assert check.attributes["infershield.check.category"] == "injection"
    assert check.attributes["infershield.check.score"] == 1.0
    assert_no_text(spans, INJECTION, "Ignore all previous")


def test_upstream_error_span_tree(
    shield: tuple[str, Telemetry], upstream: tuple[RecordingTriton, int], receiver: OtlpReceiver,
) -> None:
    url, _ = shield
    recorder, _ = upstream
    recorder.fail = True
    try:
        ch, s = stub(url)
        with ch, pytest.raises(grpc.RpcError) as err:
            s.ModelInfer(text_request(["hello"]), metadata=caller_metadata(3), timeout=30)
    finally:
        recorder.fail = False
    assert err.value.code() is grpc.StatusCode.INTERNAL

    spans = spans_of(receiver, trace_id(3), 3)
    root = root_of(spans)
    assert root.status_code == STATUS_ERROR
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    kids = children(spans, root)
    (up,) = [k for k in kids if k.name == "upstream ModelInfer"]
    assert up.kind == KIND_CLIENT and up.status_code == STATUS_ERROR
    assert up.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert "model crashed" in up.status_message
    assert [k.name for k in kids if k.kind == KIND_INTERNAL] == ["check keywords"]


def test_metrics_after_the_requests(shield: tuple[str, Telemetry]) -> None:
    _, tel = shield
    assert tel.metrics_server is not None
    with urllib.request.urlopen(tel.metrics_server.url, timeout=5) as r:
        text = r.read().decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples
    }

    def req(decision: str, code: str) -> float:
        key = ("infershield_requests_total", tuple(sorted(
            {"rpc": "ModelInfer", "model": "echo", "decision": decision, "code": code}.items())))
        return got.get(key, 0.0)

    assert req("allow", "OK") >= 1
    assert req("block", "PERMISSION_DENIED") >= 1
    assert req("allow", "INTERNAL") >= 1
    blocks = ("infershield_blocks_total",
              (("category", "injection"), ("check", "keywords"), ("stage", "input")))
    assert got[blocks] >= 1
    for stage in ("input_checks", "upstream", "output_checks", "total"):
        assert got[("infershield_stage_duration_seconds_count", (("stage", stage),))] >= 1
    assert got[("infershield_in_flight_requests", ())] == 0
    assert got[("infershield_upstream_errors_total", (("code", "INTERNAL"),))] >= 1


# --------------------------------------------------------------------------- `infershield serve`


def test_serve_exports_spans_with_only_otel_env(receiver: OtlpReceiver, tmp_path: Path) -> None:
    """The CLI path: no telemetry config at all, only OTEL_EXPORTER_OTLP_ENDPOINT."""
    from infershield.v1 import firewall_pb2 as fpb
    from infershield.v1 import firewall_pb2_grpc as fpb_grpc

    port = free_port()
    cfg = tmp_path / "policy.yaml"
    cfg.write_text(yaml.safe_dump({
        "backend": {"kind": "local"},
        "policy": {"input": [{"type": "signatures", "options": {"packs": ["injection"]}}]},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "INFERSHIELD_"))}
    env.update({
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_SERVICE_NAME": "serve-cli",
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "infershield", "serve", "--config", str(cfg),
         "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        ch = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(ch).result(timeout=120)
        with ch:
            fw = fpb_grpc.FirewallStub(ch)
            fw.Scan(fpb.ScanRequest(texts=["hello there"]), metadata=caller_metadata(9),
                    timeout=30, wait_for_ready=True)
    finally:
        proc.send_signal(signal.SIGTERM)  # drains, then flushes the batch span processor
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    spans = spans_of(receiver, trace_id(9), 2)
    root = root_of(spans)
    assert (root.name, root.service_name, root.parent_span_id) == ("Scan", "serve-cli", CALLER_SPAN)
    assert [k.name for k in children(spans, root)] == ["check signatures"]
    # serve logs JSON lines (the default format).
    first = next(line for line in out.splitlines() if line.startswith("{"))
    assert yaml.safe_load(first)["level"] in ("INFO", "WARNING")
