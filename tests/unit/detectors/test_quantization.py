"""Dynamic int8 quantisation: a window scores the same whatever else is in its batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from infershield.detectors.quantization import (
    batch_independence,
    per_token_activations,
    rewritable,
)
from infershield.detectors.runtime import RuntimeOptions, SequenceClassifier
from tiny_model import WORDS, _tokenizer

HIDDEN = 16


def _float_graph(ms_matmul: bool = False) -> onnx.ModelProto:
    """Embeddings -> dense + ReLU -> masked mean -> dense: logits for 3 labels. Some token
    embeddings are 50x the rest, so one outlier row sets a per-batch scale for everyone."""
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (len(WORDS), HIDDEN)).astype(np.float32)
    emb[WORDS.index("w39")] *= 50.0
    w1 = rng.normal(0, 0.5, (HIDDEN, HIDDEN)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (HIDDEN, 3)).astype(np.float32)
    n = helper.make_node
    if ms_matmul:  # a fused per-batch op that no rewrite covers
        w1q = np.round(w1 / (np.abs(w1).max() / 127)).astype(np.int8)
        dense = [n("DynamicQuantizeMatMul", ["x", "w1q", "w1s", "w1z"], ["h"],
                   domain="com.microsoft")]
        extra = [numpy_helper.from_array(w1q, "w1q"),
                 numpy_helper.from_array(np.array(np.abs(w1).max() / 127, np.float32), "w1s"),
                 numpy_helper.from_array(np.array(0, np.int8), "w1z")]
    else:
        dense = [n("MatMul", ["x", "w1"], ["h"])]
        extra = [numpy_helper.from_array(w1, "w1")]
    nodes = [
        n("Gather", ["emb", "input_ids"], ["x"]),
        *dense,
        n("Relu", ["h"], ["r"]),
        n("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["m", "ax2"], ["m3"]),
        n("Mul", ["r", "m3"], ["rm"]),
        n("ReduceSum", ["rm", "ax1"], ["s"], keepdims=0),
        n("ReduceSum", ["m3", "ax1"], ["c"], keepdims=0),
        n("Div", ["s", "c"], ["pooled"]),
        n("MatMul", ["pooled", "w2"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(emb, "emb"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1"),
             numpy_helper.from_array(np.array([2], np.int64), "ax2"), *extra]
    g = helper.make_graph(
        nodes, "tiny_dense",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "t"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "t"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], inits)
    opsets = [helper.make_opsetid("", 17)] + (
        [helper.make_opsetid("com.microsoft", 1)] if ms_matmul else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    return m


def _model_dir(out: Path, model: onnx.ModelProto) -> Path:
    out.mkdir(parents=True)
    onnx.save(model, str(out / "model.onnx"))
    _tokenizer().save(str(out / "tokenizer.json"))
    (out / "config.json").write_text(json.dumps({
        "id2label": {"0": "BENIGN", "1": "INJECTION", "2": "JAILBREAK"},
        "max_position_embeddings": 32, "pad_token_id": 0}))
    return out


def _quantized(out: Path) -> onnx.ModelProto:
    """What a user's int8 export usually is: onnxruntime's ``quantize_dynamic``, untouched."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = out / "float.onnx"
    onnx.save(_float_graph(), str(src))
    quantize_dynamic(src, out / "int8.onnx", weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"])
    return onnx.load(str(out / "int8.onnx"))


PROBE = "w1 w2 w3 w4 w5"
OTHERS = ["w39 w39 w39 w39 w39 w39 w39 w39", "w7 w8", "inject w10 w11 w12 w13 w14 w15"]


def _alone_and_batched(clf: SequenceClassifier) -> tuple[float, list[float]]:
    probe = clf.windows(PROBE)[0]
    alone = float(clf.window_probs([probe])[0])
    batched = [float(clf.window_probs([probe, *(clf.windows(t)[0] for t in others)])[0])
               for others in ([OTHERS[0]], OTHERS, OTHERS[1:])]
    return alone, batched


def test_a_plain_quantize_dynamic_model_is_rewritten_to_per_token_scales(
        tmp_path: Path) -> None:
    model = _quantized(tmp_path)
    assert "DynamicQuantizeLinear" in {n.op_type for n in model.graph.node}
    user = _model_dir(tmp_path / "int8", model)
    # As exported, the probe's score moves with its batch (so this test can fail).
    sess = ort.InferenceSession(str(user / "model.onnx"), providers=["CPUExecutionProvider"])
    opts = RuntimeOptions(providers=("CPUExecutionProvider",), warmup=False)
    clf = SequenceClassifier(user, opts)
    ids = [clf.windows(t)[0] for t in (PROBE, OTHERS[0])]
    feeds = {"input_ids": np.zeros((2, max(map(len, ids))), np.int64)}
    feeds["attention_mask"] = np.zeros_like(feeds["input_ids"])
    for r, w in enumerate(ids):
        feeds["input_ids"][r, : len(w)], feeds["attention_mask"][r, : len(w)] = w, 1
    alone_raw = sess.run(None, {k: v[:1, : len(ids[0])] for k, v in feeds.items()})[0][0]
    assert np.abs(sess.run(None, feeds)[0][0] - alone_raw).max() > 1e-3

    plan = batch_independence(user / "model.onnx")
    assert plan.model is not None and not plan.one_row
    assert not clf.one_row
    alone, batched = _alone_and_batched(clf)
    assert batched == pytest.approx([alone] * 3, abs=1e-5)
    ref = SequenceClassifier(_model_dir(tmp_path / "f32", _float_graph()), opts)
    assert alone == pytest.approx(_alone_and_batched(ref)[0], abs=0.05)


def test_per_batch_ops_without_a_rewrite_are_scored_one_window_per_pass(
        tmp_path: Path) -> None:
    user = _model_dir(tmp_path / "ms", _float_graph(ms_matmul=True))
    plan = batch_independence(user / "model.onnx")
    assert plan.model is None and plan.one_row and "DynamicQuantizeMatMul" in plan.why
    clf = SequenceClassifier(user, RuntimeOptions(providers=("CPUExecutionProvider",)))
    assert clf.one_row
    alone, batched = _alone_and_batched(clf)
    assert batched == pytest.approx([alone] * 3, abs=1e-6)


def test_a_float_model_is_left_as_it_is(tmp_path: Path) -> None:
    user = _model_dir(tmp_path / "f32", _float_graph())
    assert batch_independence(user / "model.onnx").model is None
    assert not batch_independence(user / "model.onnx").one_row


def test_a_graph_the_rewrite_does_not_know_is_refused(tmp_path: Path) -> None:
    model = _quantized(tmp_path)
    dql = next(n for n in model.graph.node if n.op_type == "DynamicQuantizeLinear")
    # The quantised values also feed some other op: not the pattern quantize_dynamic writes.
    model.graph.node.append(helper.make_node("Cast", [dql.output[0]], ["extra"],
                                             to=TensorProto.FLOAT))
    assert "other than MatMulInteger" in rewritable(model.graph)
    user = _model_dir(tmp_path / "odd", model)
    plan = batch_independence(user / "model.onnx")
    assert plan.model is None and plan.one_row
    with pytest.raises(ValueError):
        model.graph.ClearField("node")
        model.graph.node.append(dql)
        per_token_activations(model)


def test_the_quick_file_scan_finds_every_per_batch_op() -> None:
    from infershield.detectors.quantization import _NEEDLES, PER_BATCH_OPS

    assert all(any(n.decode() in op for n in _NEEDLES) for op in PER_BATCH_OPS)


def test_export_triton_rewrites_or_refuses_per_batch_quantisation(tmp_path: Path) -> None:
    from infershield.detectors.triton_repo import export_triton
    from infershield.errors import ConfigError

    user = _model_dir(tmp_path / "int8", _quantized(tmp_path))
    entry = export_triton(user, tmp_path / "repo", name="clf")
    ops = {n.op_type for n in onnx.load(str(entry / "1" / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" not in ops
    fused = _model_dir(tmp_path / "ms", _float_graph(ms_matmul=True))
    with pytest.raises(ConfigError, match="mixes the rows of a batch"):
        export_triton(fused, tmp_path / "repo", name="fused")
    assert not (tmp_path / "repo" / "fused").exists()
