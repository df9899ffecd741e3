"""The numpy + onnx BERT exporter against the numpy reference forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from infershield.detectors.bert import (
    BertConfig,
    EncoderOverride,
    check_layers,
    load_bert,
    load_encoder,
    minilm_dir,
    save_encoder,
)
from infershield.detectors.export import bert_graph, build_embedding_model, export_minilm
from infershield.detectors.head import Head
from infershield.errors import ConfigError
from infershield.training.bert import prune_layer, random_bert, reference_embed
from infershield.training.head import train_head

TINY = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=40)


def _session(model: object) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(),  # type: ignore[attr-defined]
                                providers=["CPUExecutionProvider"])


def _batch(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    ids = np.random.default_rng(seed).integers(0, TINY.vocab_size, (3, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    return ids, mask


def _random_head(seed: int) -> Head:
    """A one-hidden-layer head on TINY's 24-wide embedding."""
    rng = np.random.default_rng(seed)
    return Head(rng.standard_normal((24, 8)).astype(np.float32), np.zeros(8, np.float32),
                rng.standard_normal((8, 2)).astype(np.float32), np.ones(2, np.float32),
                ("benign", "injection"))


def test_tiny_bert_matches_reference() -> None:
    w = random_bert(TINY)
    ids, mask = _batch()
    out = _session(bert_graph(TINY, w)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    ref = reference_embed(TINY, w, ids, mask)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_embeddings() -> None:
    w = random_bert(TINY)
    ids, mask = _batch()
    sess = _session(bert_graph(TINY, w))
    padded = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0][1]
    alone = sess.run(None, {"input_ids": ids[1:2, :7], "attention_mask": mask[1:2, :7]})[0][0]
    np.testing.assert_allclose(padded, alone, atol=2e-5)


def test_head_graph_matches_numpy_head() -> None:
    w = random_bert(TINY)
    head = _random_head(3)
    ids, mask = _batch(2)
    logits = _session(bert_graph(TINY, w, head)).run(
        None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(logits, head.logits(reference_embed(TINY, w, ids, mask)),
                               atol=1e-4)


def test_real_minilm_export_matches_reference(tmp_path: Path) -> None:
    out = build_embedding_model(tmp_path / "emb")
    assert {p.name for p in out.iterdir()} == {"model.onnx", "tokenizer.json", "config.json"}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    texts = ["How do I reset my password?", "What is the weather in Paris today?",
             "I forgot my login credentials, help me recover my account."]
    enc = tok.encode_batch(texts)
    n = max(len(e.ids) for e in enc)
    ids = np.array([e.ids[:n] for e in enc], np.int64)
    mask = np.array([e.attention_mask[:n] for e in enc], np.int64)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    emb = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    cfg, w = load_bert(minilm_dir())
    np.testing.assert_allclose(emb, reference_embed(cfg, w, ids, mask), atol=1e-4)
    sim = emb @ emb.T
    assert sim[0, 2] > sim[0, 1] + 0.2  # password reset ~ account recovery, not weather


def test_head_roundtrip_and_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 10)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    head = train_head(x, y, ("benign", "injection"), hidden=16, epochs=200)
    acc = (head.probs(x).argmax(1) == y).mean()
    assert acc > 0.95
    head.save(tmp_path / "h.npz")
    again = Head.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(again.logits(x), head.logits(x))
    assert again.labels == head.labels


def test_bad_head_file_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="classifier head"):
        Head.load(tmp_path / "bad.npz")


def test_encoder_weights_roundtrip_as_float16(tmp_path: Path) -> None:
    w = random_bert(TINY)
    part = {k: v for k, v in w.items() if k.startswith("encoder.layer.1.")}
    save_encoder(tmp_path / "enc.npz", EncoderOverride(part))
    back = load_encoder(tmp_path / "enc.npz")
    assert set(back.weights) == set(part) and back.num_layers is None
    for k, v in part.items():
        assert back.weights[k].dtype == np.float32
        np.testing.assert_array_equal(back.weights[k], v.astype(np.float16).astype(np.float32))
    save_encoder(tmp_path / "enc2.npz", EncoderOverride(part, num_layers=2))
    assert load_encoder(tmp_path / "enc2.npz").num_layers == 2


def test_encoder_weights_roundtrip_as_int8_deltas(tmp_path: Path) -> None:
    base = random_bert(TINY)
    rng = np.random.default_rng(3)
    ft = {k: (v + rng.normal(0, 1e-3, v.shape)).astype(np.float32)
          for k, v in base.items() if k.startswith("encoder.layer.0.")}
    save_encoder(tmp_path / "d.npz", EncoderOverride(ft), base=base)
    with np.load(tmp_path / "d.npz") as z:
        matrices = [k for k in ft if ft[k].ndim == 2]
        assert matrices and all(z["d8." + k].dtype == np.int8 for k in matrices)
        assert all("enc." + k in z.files for k in ft if ft[k].ndim == 1)
    back = load_encoder(tmp_path / "d.npz", base=base)
    assert set(back.weights) == set(ft)
    for k, v in ft.items():
        if v.ndim == 2:  # within half a quantisation step of the delta's row
            step = np.abs(v - base[k]).max(axis=1, keepdims=True) / 127
            assert (np.abs(back.weights[k] - v) <= step / 2 + 1e-7).all()
        else:
            np.testing.assert_array_equal(back.weights[k], v.astype(np.float16).astype(np.float32))
    # A base of another shape cannot take the delta.
    other = {k: np.zeros((v.shape[0] + 1, v.shape[1]), np.float32) if v.ndim == 2 else v
             for k, v in base.items()}
    with pytest.raises(ConfigError, match="does not fit"):
        load_encoder(tmp_path / "d.npz", base=other)


def test_bad_encoder_file_is_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="encoder weights"):
        load_encoder(tmp_path / "bad.npz")


def test_fine_tuned_layers_replace_base_weights(tmp_path: Path) -> None:
    """export_minilm with an encoder override computes the reference with those weights."""
    cfg, w = load_bert(minilm_dir())
    rng = np.random.default_rng(5)
    name = "encoder.layer.5.output.dense.weight"
    tuned = {name: w[name] + rng.standard_normal(w[name].shape).astype(np.float32) * 0.05}
    out = export_minilm(tmp_path / "m", head=None, encoder=EncoderOverride(tuned))
    ids = np.array([[101, 7592, 2088, 2003, 102]], np.int64)
    mask = np.ones_like(ids)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    emb = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(emb, reference_embed(cfg, {**w, **tuned}, ids, mask), atol=1e-4)
    assert not np.allclose(emb, reference_embed(cfg, w, ids, mask), atol=1e-3)


def test_encoder_override_must_fit_the_base_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not fit"):
        export_minilm(tmp_path / "m", head=None, encoder=EncoderOverride(
            {"encoder.layer.9.output.dense.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(ConfigError, match="num_hidden_layers 7"):
        export_minilm(tmp_path / "m", head=None, encoder=EncoderOverride({}, num_layers=7))


def test_truncated_encoder_keeps_the_first_layers(tmp_path: Path) -> None:
    import dataclasses
    import json

    cfg, w = load_bert(minilm_dir())
    out = export_minilm(tmp_path / "m", head=None, encoder=EncoderOverride({}, num_layers=2))
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    ids = np.array([[101, 7592, 2088, 2003, 102]], np.int64)
    mask = np.ones_like(ids)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    emb = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    two = dataclasses.replace(cfg, num_hidden_layers=2)
    np.testing.assert_allclose(emb, reference_embed(two, w, ids, mask), atol=1e-4)


def test_fp16_graph_matches_fp32() -> None:
    w = random_bert(TINY)
    head = _random_head(4)
    ids, mask = _batch(3)
    feeds = {"input_ids": ids, "attention_mask": mask}
    full = _session(bert_graph(TINY, w, head)).run(None, feeds)[0]
    g16 = bert_graph(TINY, w, head, fp16=True)
    half = _session(g16).run(None, feeds)[0]
    assert half.dtype == np.float32  # same interface: int64 in, float32 logits out
    np.testing.assert_allclose(half, full, atol=2e-2)
    assert not np.array_equal(half, full)  # it really computed in float16
    big = [t for t in g16.graph.initializer if t.name.endswith(".wT")]
    assert big and all(t.data_type == 10 for t in big)  # TensorProto.FLOAT16


def test_fp16_export_writes_the_twin(tmp_path: Path) -> None:
    head = Head(np.zeros((384, 0), np.float32), np.zeros(0, np.float32),
                np.zeros((384, 2), np.float32), np.zeros(2, np.float32), ("benign", "injection"))
    out = export_minilm(tmp_path / "m", head=head, fp16=True)
    assert (out / "model_fp16.onnx").stat().st_size < 0.6 * (out / "model.onnx").stat().st_size
    ops = {n.op_type for n in onnx.load(str(out / "model_fp16.onnx")).graph.node}
    assert "Attention" in ops  # the GPU twin uses the fused kernels


@pytest.mark.parametrize("fp16", [False, True])
def test_fused_graph_matches_reference(fp16: bool) -> None:
    w = random_bert(TINY)
    ids, mask = _batch(5)
    g = bert_graph(TINY, w, fused=True, fp16=fp16)
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= {n.op_type for n in g.graph.node}
    assert len(g.graph.node) < len(bert_graph(TINY, w).graph.node) / 2
    out = _session(g).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(out, reference_embed(TINY, w, ids, mask),
                               atol=2e-3 if fp16 else 2e-5)


def _pruned_tiny() -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """TINY with layer 0 cut to 2 of 4 heads and 20 of 48 FFN neurons, layer 1 to 3 heads."""
    w = random_bert(TINY, seed=7)
    w.update(prune_layer(TINY, w, 0, [3, 1], list(range(0, 40, 2))))
    w.update(prune_layer(TINY, w, 1, [0, 1, 2], list(range(48))))
    return w


def test_pruned_layer_matches_the_masked_full_layer() -> None:
    """Pruning heads and neurons is the same as zeroing their contributions."""
    w = random_bert(TINY, seed=7)
    pruned = {**w, **prune_layer(TINY, w, 0, [3, 1], [5, 0, 9])}
    assert pruned["encoder.layer.0.attention.self.query.weight"].shape == (12, 24)
    assert pruned["encoder.layer.0.output.dense.weight"].shape == (24, 3)
    masked = dict(w)
    hd = TINY.head_dim
    o = w["encoder.layer.0.attention.output.dense.weight"].copy()
    for h in (0, 2):
        o[:, h * hd:(h + 1) * hd] = 0.0
    masked["encoder.layer.0.attention.output.dense.weight"] = o
    down = np.zeros_like(w["encoder.layer.0.output.dense.weight"])
    down[:, [0, 5, 9]] = w["encoder.layer.0.output.dense.weight"][:, [0, 5, 9]]
    masked["encoder.layer.0.output.dense.weight"] = down
    ids, mask = _batch(6)
    np.testing.assert_allclose(reference_embed(TINY, pruned, ids, mask),
                               reference_embed(TINY, masked, ids, mask), atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_pruned_graph_matches_reference(fused: bool) -> None:
    w = _pruned_tiny()
    ids, mask = _batch(7)
    out = _session(bert_graph(TINY, w, fused=fused)).run(
        None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(out, reference_embed(TINY, w, ids, mask), atol=2e-5)


def test_pruned_int8_graph_stays_close(tmp_path: Path) -> None:
    """The prefilter's path: a pruned MiniLM layer, fused kernels, int8 weights."""
    import dataclasses

    cfg, w = load_bert(minilm_dir())
    cfg = dataclasses.replace(cfg, num_hidden_layers=1)
    small = prune_layer(cfg, w, 0, [0, 2, 4, 6, 8, 10], list(range(0, 1536, 3)))
    out = export_minilm(tmp_path / "m", head=None, int8=True,
                        encoder=EncoderOverride(small, num_layers=1))
    meta = __import__("json").loads((out / "config.json").read_text())
    assert meta["attention_heads_per_layer"] == [6]
    assert meta["intermediate_size_per_layer"] == [512]
    ids = np.array([[101, 7592, 2088, 2003, 1037, 3231, 102]], np.int64)
    mask = np.ones_like(ids)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    # The dense layers run int8. onnxruntime has no int8 attention for pruned heads
    # (qkv_hidden_sizes), so the attention kernel itself stays float32.
    assert "MatMulInteger" in ops and "Attention" in ops
    emb = sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    ref = reference_embed(cfg, {**w, **small}, ids, mask)
    assert float(emb[0] @ ref[0]) > 0.99  # int8 moves it a little, not elsewhere


def test_int8_rows_do_not_depend_on_their_batch(tmp_path: Path) -> None:
    """Activation scales are per token: a row scores the same alone, padded, or beside a
    row of far larger activations (one scale per batch moved it by up to 0.14)."""
    import dataclasses

    cfg, w = load_bert(minilm_dir())
    cfg = dataclasses.replace(cfg, num_hidden_layers=2)
    out = export_minilm(tmp_path / "m", head=None, int8=True,
                        encoder=EncoderOverride({}, num_layers=2))
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    probe = [101, 7592, 2088, 2003, 1037, 3231, 102]
    other = [101, *([1000] * 30), *range(20000, 20040), 102]  # punctuation run + rare pieces

    def run(rows: list[list[int]]) -> np.ndarray:  # type: ignore[type-arg]
        ids = np.zeros((len(rows), max(map(len, rows))), np.int64)
        mask = np.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, : len(row)], mask[r, : len(row)] = row, 1
        return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]  # type: ignore[no-any-return]

    alone = run([probe])[0]
    np.testing.assert_allclose(run([probe, other])[0], alone, atol=1e-5)
    np.testing.assert_allclose(run([other, probe])[1], alone, atol=1e-5)
    ref = reference_embed(cfg, w, np.array([probe]), np.ones((1, len(probe)), np.int64))
    assert float(alone @ ref[0]) > 0.99


def test_layers_that_do_not_fit_together_are_config_errors(tmp_path: Path) -> None:
    _, w = load_bert(minilm_dir())
    # A pruned query without the matching key and output projection.
    bad = {"encoder.layer.0.attention.self.query.weight":
           w["encoder.layer.0.attention.self.query.weight"][:64]}
    with pytest.raises(ConfigError, match=r"layer 0: attention\.self\.query"):
        export_minilm(tmp_path / "m", head=None, encoder=EncoderOverride(bad))
    # Rows that are not whole heads.
    cut = prune_layer(TINY, random_bert(TINY), 0, [0, 1, 2, 3], list(range(48)))
    odd = {k: (v[:5] if "self" in k else v[:, :5] if "attention.output.dense.weight" in k else v)
           for k, v in cut.items()}
    with pytest.raises(ConfigError, match="do not make a layer"):
        check_layers(TINY, {**random_bert(TINY), **odd})
