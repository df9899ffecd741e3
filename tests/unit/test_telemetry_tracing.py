"""Tracing: OTLP export of the pipeline's spans, env/config resolution, sampling, W3C context."""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from infershield.checks.base import Check, CheckContext
from infershield.config import TelemetryConfig
from infershield.errors import ConfigError
from infershield.pipeline import Pipeline, Step
from infershield.telemetry import (
    check_span,
    detector_span,
    extract_context,
    inject_metadata,
    rpc_scope,
    server_span,
    set_rpc_status,
    setup_tracing,
    shutdown_tracing,
    tracing_enabled,
    upstream_span,
)
from infershield.telemetry.testing import OtlpReceiver, children
from infershield.telemetry.tracing import resolve_settings
from infershield.verdict import Verdict

SECRET = "SECRET-PROMPT-7f3a"  # must never show up in any span attribute
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INFER = "/inference.GRPCInferenceService/ModelInfer"
# OTLP proto enum values
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2


class Keyword(Check):
    def __init__(self, name: str, word: str) -> None:
        super().__init__(name)
        self.word = word

    def check(self, ctx: CheckContext) -> Verdict:
        if self.word in ctx.text:
            return self.block(f"matched {ctx.text}", 0.9, categories=("injection", "jailbreak"))
        return self.allow(score=0.2)


class Detector(Check):
    """Stands in for the classifier: one batched detector call per check_batch."""

    def check(self, ctx: CheckContext) -> Verdict:
        return self.check_batch([ctx])[0]

    def check_batch(self, ctxs: Sequence[CheckContext]) -> list[Verdict]:
        with detector_span("tiny-bert", len(ctxs)):
            return [self.allow(score=0.3) for _ in ctxs]


class Boom(Check):
    def check(self, ctx: CheckContext) -> Verdict:
        raise RuntimeError(f"exploded on {ctx.text}")


def traceparent(sampled: bool = True) -> list[tuple[str, str]]:
    return [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-{'01' if sampled else '00'}")]


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    yield
    shutdown_tracing()


def traced(cfg: TelemetryConfig | None = None, **env: str) -> InMemorySpanExporter:
    """Set up tracing into a fresh in-memory exporter (a shut-down exporter drops spans)."""
    exporter = InMemorySpanExporter()
    cfg = cfg or TelemetryConfig(sample_ratio=1.0)
    setup_tracing(cfg, env=env, exporter=exporter, set_global=False)
    return exporter


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return traced()


def test_pipeline_span_tree_is_exported_over_otlp() -> None:
    with OtlpReceiver() as rx:
        cfg = TelemetryConfig(traces_exporter="otlp", otlp_endpoint=rx.endpoint, service_name="fw",
                              sample_ratio=0.0)  # the caller's sampled context is continued
        provider = setup_tracing(cfg, env={}, set_global=False)
        assert provider is not None
        pipeline = Pipeline([
            Step(Keyword("signatures", "ignore previous")),
            Step(Detector("classifier")),
            Step(Boom("flaky"), on_error="allow"),
        ])
        with server_span(INFER, traceparent()) as span:
            ctxs = [CheckContext(f"{SECRET} ignore previous", model="m"), CheckContext(SECRET)]
            results = pipeline.run_batch(ctxs)
            set_rpc_status(span, grpc.StatusCode.PERMISSION_DENIED, "blocked by signatures")
        assert [r.blocked for r in results] == [True, False]
        provider.force_flush()
        spans = rx.wait_for(lambda s: len(s) >= 5)

    (root,) = [s for s in spans if s.name == "ModelInfer"]
    assert (root.trace_id, root.parent_span_id, root.kind) == (TRACE_ID, PARENT_ID, KIND_SERVER)
    assert root.service_name == "fw"
    assert root.attributes["rpc.method"] == "ModelInfer"
    assert root.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert root.status_code == STATUS_ERROR

    checks = children(spans, root)
    assert [s.name for s in checks] == ["check signatures", "check classifier", "check flaky"]
    sig, clf, flaky = (s.attributes for s in checks)
    assert all(s.kind == KIND_INTERNAL for s in checks)
    # One span per check per batch, attributes aggregated over the batch.
    assert sig == {
        "infershield.check.name": "signatures", "infershield.stage": "input",
        "infershield.batch_size": 2, "infershield.check.decision": "block",
        "infershield.check.status": "ok", "infershield.check.score": pytest.approx(0.9),
        "infershield.check.category": "injection,jailbreak", "infershield.check.blocked": 1,
    }
    assert clf["infershield.check.decision"] == "allow"
    assert clf["infershield.check.category"] == "none"
    assert clf["infershield.check.score"] == pytest.approx(0.3)
    assert (flaky["infershield.check.status"], flaky["infershield.check.decision"]) == (
        "error", "allow",
    )
    assert checks[2].status_code == STATUS_ERROR

    (det,) = children(spans, checks[1])
    assert det.name == "detector.batch"
    assert det.attributes == {
        "infershield.detector.model": "tiny-bert", "infershield.batch_size": 2,
    }

    for s in spans:
        assert not any(SECRET in str(v) for v in s.attributes.values()), s.name
        assert SECRET not in s.status_message


def test_env_alone_exports_spans() -> None:
    with OtlpReceiver() as rx:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": "from-env",
            "OTEL_TRACES_SAMPLER_ARG": "1",  # the default samples 1% of new roots
        }
        provider = setup_tracing(TelemetryConfig(), env=env, set_global=False)
        assert provider is not None
        with check_span("c", "input", 1):
            pass
        provider.force_flush()
        (span,) = rx.wait_for(lambda s: len(s) == 1)
    assert (span.name, span.service_name, span.parent_span_id) == ("check c", "from-env", "")


@pytest.mark.parametrize(
    ("cfg", "env", "exporter"),
    [
        (TelemetryConfig(), {}, "none"),
        (TelemetryConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4317"}, "otlp"),
        (TelemetryConfig(), {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://h:4317"}, "otlp"),
        (TelemetryConfig(otlp_endpoint="http://h:4317"), {}, "otlp"),
        (TelemetryConfig(otlp_endpoint="http://h:4317"), {"OTEL_TRACES_EXPORTER": "none"}, "none"),
        (TelemetryConfig(otlp_endpoint="http://h:1"), {"OTEL_SDK_DISABLED": "true"}, "none"),
        (TelemetryConfig(traces_exporter="console"), {}, "console"),
        (TelemetryConfig(traces_exporter="none"), {"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
    ],
)
def test_exporter_resolution_env_over_config(
    cfg: TelemetryConfig, env: dict[str, str], exporter: str
) -> None:
    assert resolve_settings(cfg, env).exporter == exporter


def test_endpoint_and_service_name_env_over_config() -> None:
    cfg = TelemetryConfig(otlp_endpoint="http://cfg:1", service_name="cfg")
    s = resolve_settings(cfg, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:2",
                               "OTEL_SERVICE_NAME": "env"})
    assert (s.endpoint, s.service_name) == ("http://env:2", "env")
    assert resolve_settings(cfg, {}).endpoint == "http://cfg:1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unsupported exporter 'zipkin'"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "unsupported sampler 'sometimes'"),
        ({"OTEL_TRACES_SAMPLER_ARG": "half"}, "expected a number"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "within [0, 1]"),
    ],
)
def test_bad_otel_env_is_a_config_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve_settings(TelemetryConfig(), env)


def test_tracing_off_uses_no_spans() -> None:
    assert setup_tracing(TelemetryConfig(), env={}) is None
    assert not tracing_enabled()
    with check_span("c", "input", 1) as s1, server_span(INFER, traceparent()) as s2:
        assert s1 is None and s2 is None
    r = Pipeline([Step(Keyword("k", "x"))]).run(CheckContext("x"))
    assert r.blocked


def test_sample_ratio_zero_drops_root_traces() -> None:
    memory = traced(TelemetryConfig(sample_ratio=0.0))
    # An unsampled root costs no span at all, and its children follow.
    with server_span(INFER, []) as root, check_span("c", "input", 1) as child:
        assert root is None and child is None
    with rpc_scope(INFER, []) as rpc, check_span("c", "input", 1) as child:
        assert rpc.span is None and not rpc.traced and child is None
    with check_span("c", "input", 1) as lone:
        assert lone is None
    assert memory.get_finished_spans() == ()


def test_root_ratio_is_applied_once() -> None:
    """Roots are drawn at the ratio once (a second draw in the SDK would square it)."""
    memory = traced(TelemetryConfig(sample_ratio=0.5))
    n = 2000
    for _ in range(n):
        with rpc_scope(INFER, [("x-request-id", "r")]):
            Pipeline([Step(Keyword("k", "x"))]).run(CheckContext("text"))
    spans = memory.get_finished_spans()
    roots = [s for s in spans if s.kind is SpanKind.SERVER]
    assert 0.42 * n < len(roots) < 0.58 * n  # 0.25 * n if squared
    # Every sampled root has its check span, and no check span is an orphan root.
    assert len(spans) == 2 * len(roots)
    assert all(s.parent is not None for s in spans if s.kind is SpanKind.INTERNAL)


def test_sampling_follows_the_callers_decision() -> None:
    memory = traced(TelemetryConfig(sample_ratio=0.0))
    with server_span(INFER, traceparent(sampled=True)), check_span("c", "input", 1):
        pass
    assert [s.name for s in memory.get_finished_spans()] == ["check c", "ModelInfer"]
    memory = traced(TelemetryConfig(sample_ratio=1.0))
    with server_span(INFER, traceparent(sampled=False)), check_span("c", "input", 1):
        pass
    assert memory.get_finished_spans() == ()


def test_sampler_from_env() -> None:
    memory = traced(TelemetryConfig(sample_ratio=1.0), OTEL_TRACES_SAMPLER="always_off")
    with server_span(INFER, traceparent(sampled=True)):
        pass
    assert memory.get_finished_spans() == ()


def test_inject_replaces_the_callers_trace_headers(memory: InMemorySpanExporter) -> None:
    incoming = [*traceparent(), ("x-user", "alice"), ("blob-bin", b"\x00")]
    with server_span(INFER, incoming), upstream_span(INFER, model="m", target="triton:8001") as up:
        assert up is not None
        out = inject_metadata(incoming)
        up_id = format(up.get_span_context().span_id, "016x")
    assert ("x-user", "alice") in out and ("blob-bin", b"\x00") in out
    (tp,) = [v for k, v in out if k == "traceparent"]
    assert tp == f"00-{TRACE_ID}-{up_id}-01"
    # And what we inject, the next hop extracts.
    ctx = trace.get_current_span(extract_context(out)).get_span_context()
    assert (format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")) == (TRACE_ID, up_id)
    client = next(s for s in memory.get_finished_spans() if s.kind is SpanKind.CLIENT)
    assert client.name == "upstream ModelInfer"
    assert client.attributes is not None
    assert client.attributes["server.address"] == "triton"
    assert client.attributes["server.port"] == 8001
    assert client.attributes["infershield.model"] == "m"


def test_extract_ignores_garbage() -> None:
    ctx = extract_context([("traceparent", "not-a-trace"), ("x", "y")])
    assert not trace.get_current_span(ctx).get_span_context().is_valid
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid


def test_set_rpc_status_ok_leaves_status_unset(memory: InMemorySpanExporter) -> None:
    with upstream_span(INFER) as up:
        set_rpc_status(up, grpc.StatusCode.OK)
    with upstream_span(INFER) as up:
        set_rpc_status(up, grpc.StatusCode.UNAVAILABLE, "connection refused")
    ok, bad = memory.get_finished_spans()
    assert ok.status.status_code is StatusCode.UNSET
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == "UNAVAILABLE: connection refused"
    assert bad.attributes is not None and bad.attributes["rpc.grpc.status_code"] == 14


def test_rpc_scope_puts_model_and_decision_on_the_server_span(
    memory: InMemorySpanExporter,
) -> None:
    with rpc_scope(INFER, traceparent()) as rpc:
        Pipeline([Step(Keyword("sig", "bad"))]).run(CheckContext("bad", model="llm"))
        set_rpc_status(rpc, grpc.StatusCode.PERMISSION_DENIED, "blocked by sig")
    check, root = memory.get_finished_spans()
    assert root.parent is not None and format(root.parent.span_id, "016x") == PARENT_ID
    assert check.parent is not None and check.parent.span_id == root.context.span_id
    assert root.attributes is not None
    assert root.attributes["infershield.model"] == "llm"
    assert root.attributes["infershield.decision"] == "block"
    assert root.status.description == "PERMISSION_DENIED: blocked by sig"


def test_detector_span_never_starts_a_root_trace(memory: InMemorySpanExporter) -> None:
    with detector_span("m", 4) as outside:
        assert outside is None
    with server_span(INFER, []), detector_span("m", 4) as inside:
        assert inside is not None


class _TinyModel:
    """Duck-types the SequenceClassifier surface the micro-batcher uses."""

    model_dir = Path("tiny-detector")

    def windows_each(self, texts: Sequence[str]) -> list[list[list[int]]]:
        return [[[1, 2, 3]] for _ in texts]

    def score_windows(self, per_text: Sequence[Any]) -> Any:
        import numpy as np

        return np.full(len(per_text), 0.25, np.float32)


def test_micro_batch_span_joins_the_submitters_traces(memory: InMemorySpanExporter) -> None:
    from infershield.detectors.runtime import MicroBatcher

    batcher = MicroBatcher(_TinyModel(), max_batch=8, max_wait_ms=500)
    try:
        with server_span(INFER, traceparent()) as a:
            fa = batcher.submit("one")
        with server_span(INFER, []) as b:
            fb = batcher.submit("two")
        outside = batcher.submit("three")  # not traced: counted in the batch, not linked
        assert [f.result(5) for f in (fa, fb, outside)] == [0.25, 0.25, 0.25]
    finally:
        batcher.close()
    assert a is not None and b is not None
    (det,) = [s for s in memory.get_finished_spans() if s.name == "detector.batch"]
    assert det.parent is not None and det.parent.span_id == a.get_span_context().span_id
    assert [link.context.span_id for link in det.links] == [b.get_span_context().span_id]
    assert det.attributes is not None
    assert det.attributes["infershield.detector.requests"] == 3
    assert det.attributes["infershield.detector.model"] == "tiny-detector"
