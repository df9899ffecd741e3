"""``classifier.backend: triton``: options, and failing closed when the detector is down.

The request path against a real Triton is tested in tests/e2e/test_classifier_offload.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from firewall_support import free_port
from infershield.checks.base import CheckContext
from infershield.checks.input.classifier import (
    ClassifierCheck,
    ClassifierOptions,
    ClassifierTritonOptions,
)
from infershield.config import BackendConfig, BackendTlsConfig, CheckSpec, Config, build
from infershield.detectors.remote import DetectorUnavailable, TritonModel
from infershield.errors import ConfigError
from infershield.policy import build_pipeline
from infershield.verdict import Decision, Status
from tiny_model import build_tiny_classifier  # type: ignore[import-not-found]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_classifier(tmp_path_factory.mktemp("tiny"))


def _down() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_bad_backend_is_a_startup_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"input\[0\]\.options\.backend.*'local', 'triton'"):
        build_pipeline([CheckSpec(type="classifier", options={"backend": "remote"})], "input",
                       Config(), fail_fast=False)
    with pytest.raises(ConfigError, match=r"options\.triton\.timeout_s"):
        build(ClassifierOptions, {"triton": {"timeout_s": 0}}, "classifier.options")
    with pytest.raises(ConfigError, match=r"options\.triton\.tls"):
        build(ClassifierOptions, {"triton": {"tls": "maybe"}}, "classifier.options")


def test_triton_backend_needs_an_address(tiny_dir: Path) -> None:
    opts = ClassifierOptions(model=str(tiny_dir), backend="triton", prefilter="none")
    with pytest.raises(ConfigError, match=r"classifier\.triton\.url"):
        ClassifierCheck.from_config("classifier", opts, Config())


def test_url_defaults_to_the_upstream_with_its_tls(tiny_dir: Path, tmp_path: Path) -> None:
    upstream = _down()
    tls = BackendTlsConfig(enabled=True)
    cfg = Config(backend=BackendConfig(kind="triton", upstream=f"triton://{upstream}", tls=tls))
    opts = ClassifierOptions(model=str(tiny_dir), backend="triton", prefilter="none")
    chk = ClassifierCheck.from_config("classifier", opts, cfg)
    try:
        assert chk.remote is not None
        assert (chk.remote.target, chk.remote.tls) == (upstream, True)
    finally:
        chk.close()
    # Another address: backend.tls is the upstream's, so not used unless asked for.
    other = ClassifierOptions(model=str(tiny_dir), backend="triton", prefilter="none",
                              triton=ClassifierTritonOptions(url=_down()))
    chk = ClassifierCheck.from_config("classifier", other, cfg)
    try:
        assert chk.remote is not None and chk.remote.tls is False
    finally:
        chk.close()


def test_unreachable_model_raises_detector_unavailable() -> None:
    m = TritonModel(_down(), "injection-minilm", timeout_s=2.0)
    try:
        # The message (which a verdict may show) names the model, not the address.
        msg = r"^detector model injection-minilm: UNAVAILABLE$"
        with pytest.raises(DetectorUnavailable, match=msg):
            m.describe()
    finally:
        m.close()


def test_detector_down_blocks_every_path(tiny_dir: Path) -> None:
    """Benign text is blocked (status error, reason says why) by check, acheck and
    check_batch, with the local prefilter cascade in front too."""
    for prefilter in ("none", str(tiny_dir)):
        remote = TritonModel(_down(), "tiny", timeout_s=2.0)
        chk = ClassifierCheck("classifier", ClassifierOptions(prefilter_clear=0.0),
                              tiny_dir, None if prefilter == "none" else Path(prefilter),
                              remote=remote)
        try:
            ctx = CheckContext(text="w1 w2 w3", stage="input")
            verdicts = [chk.check(ctx), asyncio.run(chk.acheck(ctx)),
                        *chk.check_batch([ctx, CheckContext(text="w4", stage="input")])]
            for v in verdicts:
                assert (v.decision, v.status) == (Decision.BLOCK, Status.ERROR)
                assert "detector unavailable" in v.reason and "fail closed" in v.reason
        finally:
            chk.close()


class _FakeStub:
    """Answers ModelInfer with the logits it is given, whatever was sent."""

    def __init__(self, logits: list[list[float]]) -> None:
        self.logits = logits

    def ModelInfer(self, req: Any, timeout: float) -> Any:
        from tritonclient.grpc import service_pb2 as pb

        arr = np.asarray(self.logits, np.float32)
        resp = pb.ModelInferResponse(model_name=req.model_name)
        resp.outputs.add(name="logits", datatype="FP32", shape=list(arr.shape))
        resp.raw_output_contents.append(arr.tobytes())
        return resp


@pytest.mark.parametrize("logits", [[[0.0, 9.0]], [[0.0, 9.0]] * 5, [[0.0, float("nan")]] * 3,
                                    [0.0, 1.0, 2.0]])
def test_an_answer_that_does_not_fit_the_batch_is_malformed(logits: Any) -> None:
    """One row for three windows would be spread over all three by numpy (a fail-open on a
    misbehaving detector); too many rows, non-finite logits or a flat output are refused too."""
    m = TritonModel(_down(), "tiny", timeout_s=2.0)
    try:
        m.inputs = {"input_ids": "INT64", "attention_mask": "INT64"}
        m.output = "logits"
        m._stub = _FakeStub(logits)
        ones = np.ones((3, 4), np.int64)
        feeds = {"input_ids": ones, "attention_mask": ones}
        with pytest.raises(DetectorUnavailable, match="malformed answer"):
            m.forward(feeds)
        m._stub = _FakeStub([[0.0, 1.0]] * 3)
        assert m.forward(feeds).shape == (3, 2)  # a fitting answer passes
    finally:
        m.close()


class _MetaStub:
    """Describes a model with the given inputs (a logits output, batch 8)."""

    def __init__(self, inputs: dict[str, str]) -> None:
        self.inputs = inputs

    def ModelMetadata(self, req: Any, timeout: float) -> Any:
        from tritonclient.grpc import service_pb2 as pb

        meta = pb.ModelMetadataResponse(name=req.name)
        for name, dtype in self.inputs.items():
            meta.inputs.add(name=name, datatype=dtype, shape=[-1, -1])
        meta.outputs.add(name="logits", datatype="FP32", shape=[-1, 2])
        return meta

    def ModelConfig(self, req: Any, timeout: float) -> Any:
        from tritonclient.grpc import service_pb2 as pb

        return pb.ModelConfigResponse(config={"max_batch_size": 8})


def test_a_model_with_an_input_the_classifier_cannot_feed_is_the_wrong_model() -> None:
    """Found at start-up (describe), and blocked at request time (forward), never left to
    the check's ``on_error`` by a ConfigError from the request path."""
    m = TritonModel(_down(), "tiny", timeout_s=2.0)
    try:
        m._stub = _MetaStub({"input_ids": "INT64", "attention_mask": "INT64",
                             "position_ids": "INT64"})
        with pytest.raises(ConfigError, match="position_ids"):
            m.describe()
        ones = np.ones((2, 4), np.int64)
        with pytest.raises(DetectorUnavailable, match="wrong model"):
            m.forward({"input_ids": ones, "attention_mask": ones})
        m._stub = _MetaStub({"input_ids": "INT64", "attention_mask": "INT64",
                             "token_type_ids": "INT64"})
        m.describe()  # the three inputs the classifier feeds are fine
        assert m.max_batch == 8 and m.output == "logits"
    finally:
        m.close()
