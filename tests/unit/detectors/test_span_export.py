"""Span pooling in the exported graph: every unit pooled right, the max unit's logits out."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from infershield.detectors.bert import BertConfig
from infershield.detectors.export import Spans, bert_graph
from infershield.detectors.head import Head
from infershield.training.bert import random_bert, reference_embed

TINY = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=40)
SPANS = Spans(width=8, stride=4, min_tokens=3, finer=((4, 2),))
WINDOW = 20


def _run(model: object, ids: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:  # type: ignore[type-arg]
    sess = ort.InferenceSession(model.SerializeToString(),  # type: ignore[attr-defined]
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids, "attention_mask": mask})  # type: ignore[no-any-return]


def _batch() -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    ids = np.random.default_rng(4).integers(0, TINY.vocab_size, (3, WINDOW)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 13:] = 0
    mask[2, 5:] = 0
    return ids, mask


def _head(seed: int) -> Head:
    rng = np.random.default_rng(seed)
    return Head(rng.standard_normal((24, 8)).astype(np.float32), np.zeros(8, np.float32),
                rng.standard_normal((8, 2)).astype(np.float32), np.zeros(2, np.float32),
                ("benign", "injection"))


def test_units_are_the_whole_window_then_each_span() -> None:
    w = random_bert(TINY)
    ids, mask = _batch()
    units, count = _run(bert_graph(TINY, w, spans=SPANS, window=WINDOW), ids, mask)
    starts = SPANS.starts(WINDOW)
    assert units.shape == (3, 1 + len(starts), 24)
    # Unit 0 is the plain sentence embedding of the window.
    np.testing.assert_allclose(units[:, 0], reference_embed(TINY, w, ids, mask), atol=2e-5)
    for b in range(3):
        n = int(mask[b].sum())
        assert count[b, 0] == n
        for k, (s, width) in enumerate(starts, 1):
            assert count[b, k] == max(0, min(n, s + width) - s)
    # A padded row's spans equal the same row run alone (padding never leaks into a span).
    alone_u, _ = _run(bert_graph(TINY, w, spans=SPANS, window=WINDOW), ids[1:2, :13],
                      mask[1:2, :13])
    live = count[1] > 0
    np.testing.assert_allclose(units[1][live], alone_u[0][live], atol=2e-5)


def test_head_graph_outputs_the_most_suspicious_unit() -> None:
    w = random_bert(TINY)
    head = _head(5)
    ids, mask = _batch()
    units, count = _run(bert_graph(TINY, w, spans=SPANS, window=WINDOW), ids, mask)
    logits, per_unit = _run(bert_graph(TINY, w, head, spans=SPANS, window=WINDOW), ids, mask)
    margin = (head.logits(units.reshape(-1, 24)) @ np.array([-1.0, 1.0])).reshape(3, -1)
    np.testing.assert_allclose(per_unit, head.logits(units.reshape(-1, 24)).reshape(3, -1, 2),
                               atol=1e-4)
    valid = count >= SPANS.min_tokens
    valid[:, 0] = True  # the whole window always counts
    want = np.where(valid, margin, -np.inf).max(1)
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], want, atol=1e-4)


def test_spans_round_trip_through_head_meta() -> None:
    assert Spans.from_meta({}) is None
    assert Spans.from_meta(SPANS.as_meta()) == SPANS
    assert Spans.from_meta(Spans().as_meta()) == Spans()
    assert len(SPANS.starts(WINDOW)) == 4 + 9  # widths 8 (stride 4) and 4 (stride 2) in 20
