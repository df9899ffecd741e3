"""Cross-source evaluation and the span (multiple-instance) head.

Rows are grouped by their source repository (the part of ``source`` before ``:``) and the
groups are dealt into ``k`` folds. For each fold a head is trained on cached encoder features
of every other fold (plus the always-trained written data) and scores the held-out fold, so
every labelled row gets an out-of-fold (OOF) score from a head that never saw its source.

- Each attack source's TPR is measured at a threshold taken from the OOF scores of the
  benign rows of the *other* folds (1% FPR there), never from the scored fold.
- Each benign source's FPR is measured at the same per-fold threshold, and at the threshold
  chosen on all pooled OOF benign rows (the one that ships).

The encoder is fixed (a proxy for full fine-tuning). It was fine-tuned on ``train.jsonl``, so
folds of ``train.jsonl`` sources are optimistic; ``extra.jsonl`` sources are unseen by it.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.detectors.head import Head
from infershield.training.features import TextUnits, stack
from infershield.training.head import train_head
from infershield.training.training import HEAD_LABELS, Row, auc, binary_target

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def repo_of(source: str) -> str:
    """The group key: the source repository (``owner/name``), or ``written`` for ours."""
    return source.partition(":")[0] or "written"


def assign_folds(rows: Sequence[Row], k: int) -> dict[str, int]:
    """Deal the source repositories into ``k`` folds of similar size (deterministic: the
    largest group first, each to the fold with the fewest rows; ties by a hash)."""
    sizes: dict[str, int] = defaultdict(int)
    for r in rows:
        sizes[repo_of(r.source)] += 1
    order = sorted(sizes, key=lambda g: (-sizes[g], hashlib.sha1(g.encode()).hexdigest()))
    load = [0] * k
    fold: dict[str, int] = {}
    for g in order:
        f = min(range(k), key=lambda i: (load[i], i))
        fold[g] = f
        load[f] += sizes[g]
    return fold


@dataclass(frozen=True)
class HeadRecipe:
    """How a head is trained on units. ``spans=False`` is the pre-span baseline (whole
    windows only, every window of an attack text a positive)."""

    spans: bool = True
    hidden: int = 256
    epochs: int = 30
    rounds: int = 2  # multiple-instance rounds after the first
    label_smoothing: float = 0.0
    #: Extra weight on the benign units the previous round scored above 0.5 (hard negatives).
    hard_negative_boost: float = 2.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _probs(head: Head, x: F32, chunk: int = 65536) -> F32:
    out = np.empty(len(x), np.float32)
    for s in range(0, len(x), chunk):
        out[s : s + chunk] = head.probs(x[s : s + chunk])[:, 1]
    return out


def text_scores(head: Head, units: Sequence[TextUnits], *, spans: bool = True) -> F32:
    """Each text's attack probability: the max over its units (whole windows + spans)."""
    x, owner, _ = stack(units, spans=spans)
    out = np.zeros(len(units), np.float32)
    np.maximum.at(out, owner, _probs(head, x))
    return out


def train_units_head(units: Sequence[TextUnits], y: I64, weight: F32,
                     recipe: HeadRecipe) -> Head:
    """Multiple-instance training: every unit of a benign text is a negative; an attack
    text's positive is its whole windows first, then (each later round) the unit the
    previous head scored highest. Benign units the previous head scored high get extra
    weight (hard-negative mining)."""
    x, owner, whole = stack(units, spans=recipe.spans)
    yu = y[owner]
    n_units = np.bincount(owner, minlength=len(units)).astype(np.float32)
    wb = weight[owner] * np.minimum(1.0, 4.0 / n_units[owner])  # long benign texts: capped
    n_whole = np.bincount(owner, weights=whole, minlength=len(units)).astype(np.float32)
    pos0 = (yu == 1) & whole
    wp = weight[owner] / np.maximum(n_whole[owner], 1.0)
    sel = (yu == 0) | pos0
    sw = np.where(yu == 0, wb, wp).astype(np.float32)
    head = _fit(x[sel], yu[sel], sw[sel], recipe)
    for _ in range(recipe.rounds):
        p = _probs(head, x)
        best = np.full(len(units), -1.0)
        arg = np.full(len(units), -1, np.int64)
        # The highest-scoring unit of each text (ties: the first).
        order = np.lexsort((-p, owner))
        first = np.ones(len(order), bool)
        first[1:] = owner[order][1:] != owner[order][:-1]
        arg[owner[order][first]] = order[first]
        best[owner[order][first]] = p[order][first]
        pos = np.zeros(len(x), bool)
        att = np.flatnonzero((y == 1) & (arg >= 0))
        pos[arg[att]] = True
        boost = np.where((yu == 0) & (p > 0.5), 1.0 + recipe.hard_negative_boost, 1.0)
        sel = (yu == 0) | pos
        sw = np.where(yu == 0, wb * boost, weight[owner]).astype(np.float32)
        head = _fit(x[sel], yu[sel], sw[sel], recipe)
    return head


def _fit(x: F32, y: I64, w: F32, recipe: HeadRecipe) -> Head:
    return train_head(x, y, HEAD_LABELS, hidden=recipe.hidden, epochs=recipe.epochs,
                      sample_weight=w, seed=recipe.seed, label_smoothing=recipe.label_smoothing,
                      batch_size=256)


def threshold_for_fpr(benign_scores: F32, fpr: float) -> float:
    """The lowest score at or above which at most ``fpr`` of ``benign_scores`` lie."""
    s = np.sort(np.asarray(benign_scores, np.float32))[::-1]
    k = int(np.floor(fpr * len(s)))
    # Block at >= t: t just above the (k+1)-th highest benign score keeps k benign blocked
    # (a float32 step: scores are float32, and a float64 step would round away).
    t = float(np.nextafter(s[k], np.float32(1.0))) if k < len(s) else float(s[-1])
    return min(max(t, 1e-6), 1.0 - 1e-7)


@dataclass
class CrossSource:
    """Out-of-fold scores of the scored rows and what they say."""

    rows: list[Row]
    fold_of_row: I64
    scores: F32
    fold_thresholds: list[float]
    k: int

    def report(self, shipped_threshold: float, *, min_rows: int = 5) -> dict[str, Any]:
        y = np.array([binary_target(r.label) for r in self.rows], np.int64)
        groups = np.array([repo_of(r.source) for r in self.rows])
        thr_row = np.array(self.fold_thresholds, np.float32)[self.fold_of_row]
        benign = y == 0
        caught = self.scores >= thr_row
        attack_rows: list[dict[str, Any]] = []
        benign_rows: list[dict[str, Any]] = []
        for g in sorted(set(groups.tolist())):
            m = groups == g
            for lab in sorted({self.rows[i].label for i in np.flatnonzero(m)}):
                mm = m & np.array([r.label == lab for r in self.rows])
                n = int(mm.sum())
                if n < min_rows:
                    continue
                if lab == "benign":
                    benign_rows.append({
                        "source": g, "rows": n, "fold": int(self.fold_of_row[mm][0]),
                        "fpr_fold_threshold": float(caught[mm].mean()),
                        "fpr_shipped": float((self.scores[mm] >= shipped_threshold).mean()),
                    })
                else:
                    sub = np.concatenate([self.scores[mm], self.scores[benign]])
                    ys = np.concatenate([np.ones(n, np.int64), np.zeros(int(benign.sum()),
                                                                         np.int64)])
                    attack_rows.append({
                        "source": g, "label": lab, "rows": n,
                        "fold": int(self.fold_of_row[mm][0]),
                        "auc": auc(ys, sub), "tpr_at_1pct_fold_fpr": float(caught[mm].mean()),
                        "tpr_shipped": float((self.scores[mm] >= shipped_threshold).mean()),
                    })
        att = y == 1
        return {
            "folds": self.k,
            "fold_thresholds": self.fold_thresholds,
            "shipped_threshold": shipped_threshold,
            "pooled": {
                "auc": auc(y, self.scores),
                "tpr_at_1pct_fold_fpr": float(caught[att].mean()),
                "fpr_fold_threshold": float(caught[benign].mean()),
                "tpr_shipped": float((self.scores[att] >= shipped_threshold).mean()),
                "fpr_shipped": float((self.scores[benign] >= shipped_threshold).mean()),
                "attack_rows": int(att.sum()), "benign_rows": int(benign.sum()),
            },
            "attack_sources": attack_rows,
            "benign_sources": benign_rows,
            "worst_attack_source": min(attack_rows, key=lambda r: r["tpr_at_1pct_fold_fpr"],
                                       default=None),
            "worst_benign_source": max(benign_rows, key=lambda r: r["fpr_shipped"],
                                       default=None),
        }


def cross_source(rows: Sequence[Row], units: Sequence[TextUnits], always: Sequence[TextUnits],
                 always_y: I64, always_w: F32, recipe: HeadRecipe, *, k: int = 5,
                 fpr: float = 0.01, scored: npt.NDArray[np.bool_] | None = None
                 ) -> CrossSource:
    """Group k-fold by source repository (see the module docstring). ``always`` (with labels
    ``always_y`` and weights ``always_w``) joins every fold's training set and is never
    scored: our written examples. Rows not ``scored`` (mutated copies of dataset rows) are
    trained on in the folds that may see their source, and never scored."""
    rows = list(rows)
    y = np.array([binary_target(r.label) for r in rows], np.int64)
    sc = scored if scored is not None else np.ones(len(rows), bool)
    fold_map = assign_folds([r for r, s in zip(rows, sc, strict=True) if s], k)
    fold = np.array([fold_map.get(repo_of(r.source), -1) for r in rows], np.int64)
    scores = np.zeros(len(rows), np.float32)
    w = np.ones(len(rows), np.float32)
    for f in range(k):
        tr = np.flatnonzero(fold != f)
        te = np.flatnonzero((fold == f) & sc)
        log.info("fold %d: train %d rows, score %d rows (%s)", f, len(tr), len(te),
                 sorted(g for g, ff in fold_map.items() if ff == f))
        head = train_units_head([units[i] for i in tr] + list(always),
                                np.concatenate([y[tr], always_y]),
                                np.concatenate([w[tr], always_w]).astype(np.float32), recipe)
        scores[te] = text_scores(head, [units[i] for i in te], spans=recipe.spans)
    keep = np.flatnonzero(sc)
    rows_s, fold_s, scores_s, y_s = [rows[i] for i in keep], fold[keep], scores[keep], y[keep]
    thresholds = [threshold_for_fpr(scores_s[(fold_s != f) & (y_s == 0)], fpr)
                  for f in range(k)]
    return CrossSource(rows_s, fold_s, scores_s, thresholds, k)


def format_cv(rep: dict[str, Any], title: str) -> str:
    """A Markdown summary of :meth:`CrossSource.report`."""
    p = rep["pooled"]
    lines = [
        f"### {title}",
        "",
        f"folds: {rep['folds']}; per-fold thresholds (1% FPR on the other folds' OOF benign): "
        + ", ".join(f"{t:.3f}" for t in rep["fold_thresholds"]),
        f"pooled: AUC {p['auc']:.4f}, TPR@1%FPR(fold thr) {p['tpr_at_1pct_fold_fpr']:.3f} "
        f"(FPR {p['fpr_fold_threshold']:.4f}); at shipped thr {rep['shipped_threshold']:.3f}: "
        f"TPR {p['tpr_shipped']:.3f}, FPR {p['fpr_shipped']:.4f} "
        f"({p['attack_rows']} attack / {p['benign_rows']} benign rows)",
        "",
        "| attack source | label | rows | fold | AUC | TPR@1%FPR | TPR@shipped |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rep["attack_sources"], key=lambda r: r["tpr_at_1pct_fold_fpr"]):
        lines.append(f"| {r['source']} | {r['label']} | {r['rows']} | {r['fold']} | "
                     f"{r['auc']:.3f} | {r['tpr_at_1pct_fold_fpr']:.3f} | {r['tpr_shipped']:.3f} |")
    lines += ["", "| benign source | rows | fold | FPR@fold thr | FPR@shipped |",
              "|---|---|---|---|---|"]
    for r in sorted(rep["benign_sources"], key=lambda r: -r["fpr_shipped"]):
        lines.append(f"| {r['source']} | {r['rows']} | {r['fold']} | "
                     f"{r['fpr_fold_threshold']:.4f} | {r['fpr_shipped']:.4f} |")
    wa, wb = rep["worst_attack_source"], rep["worst_benign_source"]
    if wa:
        lines.append(f"\nworst attack source: {wa['source']} ({wa['label']}) TPR "
                     f"{wa['tpr_at_1pct_fold_fpr']:.3f}")
    if wb:
        lines.append(f"worst benign source: {wb['source']} FPR {wb['fpr_shipped']:.4f}")
    return "\n".join(lines) + "\n"
