"""Metrics, dev split and JSONL loading used by training and ``infershield eval``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infershield.detectors.training import (
    Row,
    auc,
    load_jsonl,
    source_family,
    split_dev,
    threshold_at_fpr,
    tpr_at_fpr,
)
from infershield.errors import InvalidRequest


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
