"""The span head of the shipped classifier: data mix, cross-source evaluation, final training.

``infershield detector cv`` runs the cross-source protocol (:mod:`infershield.training.crossval`)
for a recipe; ``infershield detector train`` trains the head on everything with the same
recipe, sets its threshold from the pooled out-of-fold benign scores of the cross-source run,
and saves it (``--head-out``); ``infershield models build`` then exports it with span pooling.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.detectors.head import Head
from infershield.training.crossval import (
    CrossSource,
    HeadRecipe,
    cross_source,
    format_cv,
    repo_of,
    text_scores,
    threshold_for_fpr,
    train_units_head,
)
from infershield.training.examples import examples, multilingual_examples
from infershield.training.features import SHIP_SPANS, UnitFeatures
from infershield.training.training import Row, binary_target, load_jsonl, source_family
from infershield.training.written import WRITTEN, load_written, mutate

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]


@dataclass
class Corpus:
    """Scored rows (the datasets) and train-only rows (written data, examples, mutations)."""

    rows: list[Row]  # the datasets' rows: scored out of fold
    aug: list[Row]  # mutated copies of dataset attacks: trained in their source's folds only
    always: list[Row]  # written rows, the package's examples and their mutations
    always_weight: F32


def dataset_rows(paths: Sequence[Path]) -> list[Row]:
    """The rows the head learns from (``harmful`` left out on purpose: see training.py)."""
    rows: list[Row] = []
    for p in paths:
        rows += [r for r in load_jsonl(p) if binary_target(r.label) is not None]
    return rows


def corpus(paths: Sequence[Path], *, written: bool = True, augment: bool = True,
           aug_per_family: int = 40, seed: int = 5) -> Corpus:
    rows = dataset_rows(paths)
    always: list[Row] = [*examples(), *multilingual_examples()]
    weights = [2.0] * len(always)
    aug: list[Row] = []
    if written:
        w = load_written()
        always += w
        weights += [1.0] * len(w)
    if augment:
        pads = [r.text for r in always if r.label == "benign" and 20 <= len(r.text) < 240]
        attacks = [r for r in always if binary_target(r.label) == 1]
        m = mutate(attacks, pads, per_row=1, seed=seed)
        always += m
        weights += [1.0] * len(m)
        # A capped sample of each dataset attack family, so no one source dominates.
        by_fam: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            if binary_target(r.label) == 1:
                by_fam[source_family(r.source)].append(r)
        rng = random.Random(seed)
        picked: list[Row] = []
        for fam in sorted(by_fam):
            rs = by_fam[fam]
            picked += rng.sample(rs, k=min(aug_per_family, len(rs)))
        aug = mutate(picked, pads, per_row=1, seed=seed + 1)
    return Corpus(rows, aug, always, np.array(weights, np.float32))


def _labels(rows: Sequence[Row]) -> npt.NDArray[np.int64]:
    return np.array([binary_target(r.label) for r in rows], np.int64)


def cached_only(c: Corpus, feats: UnitFeatures) -> Corpus:
    """``c`` without the dataset rows whose features are not cached yet (to bound the time
    of a run on a busy machine; the report says how many were left out)."""
    keep = [r for r in c.rows if feats.has(r.text)]
    log.warning("left out %d of %d dataset rows without cached features",
                len(c.rows) - len(keep), len(c.rows))
    return Corpus(keep, c.aug, c.always, c.always_weight)


def run_cv(c: Corpus, feats: UnitFeatures, recipe: HeadRecipe, *, k: int = 5,
           fpr: float = 0.01) -> CrossSource:
    """Cross-source OOF scores of ``c.rows`` (dataset mutations follow their source's fold)."""
    units = feats.get([r.text for r in c.rows + c.aug])
    always_u = feats.get([r.text for r in c.always])
    scored = np.zeros(len(c.rows) + len(c.aug), bool)
    scored[: len(c.rows)] = True
    return cross_source(c.rows + c.aug, units, always_u, _labels(c.always), c.always_weight,
                        recipe, k=k, fpr=fpr, scored=scored)


def train_final(c: Corpus, feats: UnitFeatures, recipe: HeadRecipe, threshold: float,
                meta: dict[str, str]) -> Head:
    rows = c.rows + c.aug + c.always
    units = feats.get([r.text for r in rows])
    w = np.concatenate([np.ones(len(c.rows) + len(c.aug), np.float32), c.always_weight])
    head = train_units_head(units, _labels(rows), w, recipe)
    if recipe.spans:
        meta = {**meta, **SHIP_SPANS.as_meta()}
    return Head(head.w1, head.b1, head.w2, head.b2, head.labels, threshold, meta)


def probe(head: Head, feats: UnitFeatures, paths: Sequence[Path], threshold: float,
          *, spans: bool = True) -> dict[str, Any]:
    """Share of each fixture file flagged at ``threshold`` (scored for the log only)."""
    out: dict[str, Any] = {}
    for p in paths:
        rows = load_jsonl(p, label=False)
        s = text_scores(head, feats.get([r.text for r in rows]), spans=spans)
        out[p.name] = {"rows": len(rows), "flagged": float((s >= threshold).mean())}
    return out


def cv_and_train(paths: Sequence[Path], cache: Path, recipe: HeadRecipe, *, k: int,
                 target_fpr: float, written: bool, augment: bool, final: bool = True,
                 cached: bool = False,
                 probes: Sequence[Path] = ()) -> tuple[dict[str, Any], Head | None, str]:
    """Cross-source run, the threshold from its pooled OOF benign scores, and (when
    ``recipe`` is to be shipped) the final head. Returns (report, head, markdown)."""
    c = corpus(paths, written=written, augment=augment)
    feats = UnitFeatures(cache)
    n_all = len(c.rows)
    if cached:
        c = cached_only(c, feats)
    cv = run_cv(c, feats, recipe, k=k)
    y = _labels(c.rows)
    thr = threshold_for_fpr(cv.scores[y == 0], target_fpr)
    rep = cv.report(thr)
    title = (f"spans={recipe.spans} written={written} augment={augment} hidden={recipe.hidden}"
             f" epochs={recipe.epochs} rounds={recipe.rounds}")
    rep["rows_left_out_uncached"] = n_all - len(c.rows)
    md = format_cv(rep, title)
    md += f"\ndataset rows left out (no cached features): {n_all - len(c.rows)}\n"
    if not final and not probes:
        return rep, None, md
    head = train_final(c, feats, recipe, thr, {
        "threshold_rule": f"{target_fpr:.4g} FPR on pooled out-of-fold benign rows "
                          f"({k}-fold by source repository)",
        "cv_oof_auc": f"{rep['pooled']['auc']:.4f}",
        "cv_oof_tpr_at_1pct_fold_fpr": f"{rep['pooled']['tpr_at_1pct_fold_fpr']:.4f}",
        "cv_oof_fpr_at_threshold": f"{rep['pooled']['fpr_shipped']:.4f}",
        "trained_by": "infershield detector train",
    })
    if probes:
        rep["probes"] = probe(head, feats, probes, thr, spans=recipe.spans)
        md += "\nfixtures at the threshold (final head): " + json.dumps(rep["probes"]) + "\n"
    return rep, head, md


def baseline_shipped(paths: Sequence[Path], cache: Path, head_path: Path,
                     threshold: float | None = None) -> str:
    """The pre-existing shipped head (whole windows) on every dataset source, unchanged:
    in-sample for train.jsonl, unseen for extra.jsonl sources."""
    feats = UnitFeatures(cache)
    everything = dataset_rows(paths)
    rows = [r for r in everything if feats.has(r.text)]  # what the cross-source run scores
    head = Head.load(head_path)
    thr = threshold if threshold is not None else head.threshold
    s = text_scores(head, feats.get([r.text for r in rows]), spans=False)
    y = _labels(rows)
    lines = [f"shipped head {head_path.name} at {thr:.3f} (whole windows):",
             "| source | label | rows | flagged |", "|---|---|---|---|"]
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[(repo_of(r.source), r.label)].append(i)
    for (g, lab), idx in sorted(groups.items()):
        if len(idx) >= 5:
            lines.append(f"| {g} | {lab} | {len(idx)} | {(s[idx] >= thr).mean():.4f} |")
    tpr, fpr = (s[y == 1] >= thr).mean(), (s[y == 0] >= thr).mean()
    lines.append(f"pooled: TPR {tpr:.4f}, FPR {fpr:.4f} ({len(everything) - len(rows)} rows "
                 "without cached features left out)")
    return "\n".join(lines) + "\n"


__all__ = ["WRITTEN", "Corpus", "corpus", "cv_and_train", "run_cv", "train_final"]


def padding_probe(model_dir: Path, prefilter_dir: Path | None, attacks: Sequence[str],
                  padding: Sequence[str], *, words: Sequence[int] = (0, 10, 50, 300)
                  ) -> list[dict[str, Any]]:
    """Share of ``attacks`` the model (or the prefilter cascade in front of it) blocks at
    its threshold with ``n`` words of benign padding (the words of ``padding``, which must
    not be training text) before, after and around each one."""
    from infershield.detectors.runtime import Cascade, RuntimeOptions, SequenceClassifier

    filler = " ".join(padding).split()
    opts = RuntimeOptions(providers=("cpu",), allow_spinning=prefilter_dir is None)
    main = SequenceClassifier(model_dir, opts)
    thr = float(main.meta.get("threshold", 0.5))
    scorer: Any = main
    if prefilter_dir is not None:
        fast = SequenceClassifier(prefilter_dir, opts)
        scorer = Cascade.from_meta(fast, main)  # the cut and pieces the fast model ships

    def pad(n: int, offset: int) -> str:
        return " ".join(filler[(offset + i) % len(filler)] for i in range(n))

    out = []
    for n in words:
        for where in (("alone",) if n == 0 else ("before", "after", "around")):
            texts = []
            for i, a in enumerate(attacks):
                p = pad(n, 7 * i)
                texts.append({"alone": a, "before": f"{p} {a}", "after": f"{a} {p}",
                              "around": f"{p} {a} {pad(n, 7 * i + 3)}"}[where])
            s = scorer.score(texts)
            out.append({"words": n, "where": where, "blocked": float((s >= thr).mean())})
    return out
