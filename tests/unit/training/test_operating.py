"""Choosing the threshold on many benign sources, checked on each source left out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infershield.errors import InvalidRequest
from infershield.training.operating import ScoredRow, at_threshold, choose, load_rows


def _rows() -> list[ScoredRow]:
    rows: list[ScoredRow] = []
    # Three ordinary benign sources scored low, one (prompts) with a high tail the others lack.
    for s in ("org/a", "org/b", "org/c"):
        rows += [ScoredRow(s, "benign", i / 1000, False) for i in range(100)]
    rows += [ScoredRow("org/prompts", "benign", 0.99 if i < 20 else 0.01, False)
             for i in range(100)]
    rows += [ScoredRow("org/att", "injection", 0.995 if i < 60 else 0.5, i % 10 == 0)
             for i in range(100)]
    return rows


def test_a_source_is_judged_at_a_threshold_chosen_without_it() -> None:
    rep = choose(_rows(), 0.01)
    per = {r["source"]: r for r in rep["benign_sources"]}
    # Chosen on a, b and c only, the threshold sits in their range: prompts' tail is blocked.
    assert per["org/prompts"]["threshold"] < 0.2
    assert per["org/prompts"]["fpr_unseen"] == pytest.approx(0.20)
    # Pooled, the 20 high prompts rows are 5% of benign: 1% lands inside the tail (0.99).
    assert rep["threshold"] > 0.99
    assert rep["benign_fpr"] == pytest.approx(0.0)
    # At the pooled threshold the attacks keep the model's 0.995 rows and the rules' 10.
    assert rep["attack_sources"][0]["tpr"] == pytest.approx(0.64)


def test_the_floor_bounds_the_threshold_from_below() -> None:
    rep = choose(_rows(), 0.4, floor=0.95)
    assert rep["threshold"] == pytest.approx(0.95)
    assert all(r["threshold"] >= 0.95 for r in rep["benign_sources"])
    assert at_threshold(_rows(), 0.95)["benign_fpr"] == pytest.approx(20 / 400)


def test_rows_need_both_classes_and_a_valid_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="benign and attack"):
        choose([r for r in _rows() if r.label == "benign"], 0.01)
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({"source": "org/a:x", "label": "benign", "model": 0.1,
                             "rules_blocked": False}) + "\n{\"source\": 1}\n")
    with pytest.raises(InvalidRequest, match=":2: not a scored row"):
        load_rows(p)
    p.write_text(json.dumps({"source": "org/a:x", "label": "benign", "model": 0.1,
                             "rules_blocked": False}) + "\n")
    assert load_rows(p) == [ScoredRow("org/a", "benign", 0.1, False)]
