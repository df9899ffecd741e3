"""Cross-source folds, thresholds and the multiple-instance head on synthetic features."""

from __future__ import annotations

import numpy as np

from infershield.training.crossval import (
    HeadRecipe,
    assign_folds,
    cross_source,
    repo_of,
    text_scores,
    threshold_for_fpr,
    train_units_head,
)
from infershield.training.features import TextUnits
from infershield.training.training import Row

D = 16


def _unit_text(rng: np.random.Generator, attack: bool, n_spans: int) -> TextUnits:
    """A text of one whole-window unit and ``n_spans`` spans. Benign units lie near -e0; an
    attack hides in ONE span near +e0 while the whole window stays benign-looking (as when
    padding dilutes it)."""
    x = rng.normal(0, 0.3, (1 + n_spans, D))
    x[:, 0] -= 1.0
    if attack:
        x[1 + rng.integers(n_spans), 0] += 3.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    whole = np.zeros(1 + n_spans, bool)
    whole[0] = True
    return TextUnits(x.astype(np.float16), whole, np.zeros(1 + n_spans, np.int16))


def _data(n: int, seed: int) -> tuple[list[TextUnits], np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    return [_unit_text(rng, bool(t), 4) for t in y], y


def test_folds_keep_each_repository_whole_and_are_deterministic() -> None:
    rows = [Row("t", "benign", f"org/repo{i % 7}:data/{i}.json") for i in range(70)]
    rows += [Row("t", "injection", "big/one:x")] * 40
    a, b = assign_folds(rows, 3), assign_folds(list(reversed(rows)), 3)
    assert a == b
    assert set(a) == {repo_of(r.source) for r in rows}
    assert set(a.values()) == {0, 1, 2}
    assert repo_of("") == "written"


def test_threshold_keeps_at_most_the_asked_fpr() -> None:
    s = np.linspace(0, 1, 1000).astype(np.float32)
    t = threshold_for_fpr(s, 0.01)
    assert (s >= t).mean() <= 0.01
    assert (s >= t).mean() >= 0.009


def test_span_head_finds_the_hidden_unit_where_whole_windows_cannot() -> None:
    units, y = _data(400, 1)
    test_u, test_y = _data(200, 2)
    w = np.ones(len(y), np.float32)
    span = train_units_head(units, y, w, HeadRecipe(spans=True, hidden=16, epochs=40))
    whole = train_units_head(units, y, w, HeadRecipe(spans=False, hidden=16, epochs=40))
    s_span = text_scores(span, test_u, spans=True)
    s_whole = text_scores(whole, test_u, spans=False)

    def acc(s: np.ndarray) -> float:  # type: ignore[type-arg]
        return float(((s >= 0.5) == test_y).mean())

    assert acc(s_span) > 0.95
    assert acc(s_whole) < 0.8  # the whole window alone carries little of the attack


def test_cross_source_scores_every_row_out_of_fold() -> None:
    units, y = _data(300, 3)
    rows = [Row("t", "injection" if t else "benign", f"org/r{i % 6}:f") for i, t in enumerate(y)]
    cv = cross_source(rows, units, [], np.zeros(0, np.int64), np.zeros(0, np.float32),
                      HeadRecipe(hidden=8, epochs=20, rounds=1), k=3)
    rep = cv.report(0.5)
    assert len(cv.fold_thresholds) == 3
    assert rep["pooled"]["auc"] > 0.95
    assert {r["source"] for r in rep["benign_sources"]} <= {f"org/r{i}" for i in range(6)}
    assert rep["worst_attack_source"] is not None
