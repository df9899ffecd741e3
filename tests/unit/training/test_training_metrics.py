"""Metrics, dev split and JSONL loading used by training and ``infershield eval``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infershield.errors import InvalidRequest
from infershield.training.training import (
    Row,
    auc,
    load_jsonl,
    source_family,
    split_dev,
    threshold_at_fpr,
    tpr_at_fpr,
)


@pytest.mark.parametrize(
    ("y", "s", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([0, 0, 1, 1], [0.1, 0.6, 0.5, 0.9], 0.75),
    ],
)
def test_auc(y: list[int], s: list[float], expected: float) -> None:
    assert auc(np.array(y), np.array(s, np.float32)) == pytest.approx(expected)


def test_tpr_at_fpr() -> None:
    neg = np.linspace(0, 1, 100, dtype=np.float32)  # 100 negatives
    pos = np.array([0.995, 0.5, 0.99], np.float32)
    y = np.r_[np.zeros(100), np.ones(3)].astype(np.int64)
    tpr, t = tpr_at_fpr(y, np.r_[neg, pos], 0.01)
    assert (neg >= t).mean() <= 0.01
    assert tpr == pytest.approx(2 / 3)
    assert threshold_at_fpr(neg, 0.0) > neg.max()


def test_split_is_deterministic_and_stratified() -> None:
    rows = [Row(f"text {i}", "benign" if i % 3 else "injection", f"a/b:c/d{i % 2}.json")
            for i in range(2000)]
    tr, dev = split_dev(rows)
    assert split_dev(rows) == (tr, dev)
    assert 0.15 < len(dev) / len(rows) < 0.25
    assert {r.label for r in dev} == {"benign", "injection"}
    assert not {r.text for r in tr} & {r.text for r in dev}


def test_source_family() -> None:
    assert source_family("microsoft/BIPIA:benchmark/email/test.jsonl+x (BIPIA)") == (
        "microsoft/BIPIA:benchmark/email")
    assert source_family("") == ""


def test_load_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "benign"}\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(InvalidRequest, match=r"d\.jsonl:2"):
        load_jsonl(p)
    p.write_text('{"text": "a\u2028b", "label": "benign", "source": "s"}\n', encoding="utf-8")
    assert load_jsonl(p) == [Row("a\u2028b", "benign", "s")]


def _toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x, y


def test_average_heads_is_the_mean_of_logits() -> None:
    from infershield.training.head import average_heads, train_head

    x, y = _toy()
    heads = [train_head(x, y, ("a", "b"), hidden=4, epochs=3, seed=s) for s in (0, 1, 2)]
    avg = average_heads(heads)
    assert avg.w1.shape == (8, 12)
    expected = np.mean([h.logits(x) for h in heads], axis=0)
    np.testing.assert_allclose(avg.logits(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        average_heads([])


def test_label_smoothing_keeps_probabilities_off_the_rails() -> None:
    from infershield.training.head import train_head

    x, y = _toy()
    sharp = train_head(x * 5, y, ("a", "b"), hidden=0, epochs=200, seed=0)
    smooth = train_head(x * 5, y, ("a", "b"), hidden=0, epochs=200, seed=0, label_smoothing=0.2)
    # Smoothed cross-entropy pulls the true-class probability towards 1 - e/2 instead of 1.
    idx = np.arange(len(y))
    p_sharp = np.median(sharp.probs(x * 5)[idx, y])
    p_smooth = np.median(smooth.probs(x * 5)[idx, y])
    assert p_sharp > 0.95
    assert p_smooth < 0.88
    with pytest.raises(ValueError):
        train_head(x, y, ("a", "b"), label_smoothing=1.0)
