"""Choosing the classifier's threshold on benign traffic from many sources, and checking the
choice on sources it was not chosen on (leave one source out).

Input: per-row scores of a policy (``infershield eval --rows-out``): each row's source, label,
the model's score and whether the rules blocked it. The policy blocks a row when the rules
do or the model's score reaches the threshold.

- For each benign source, the threshold is chosen on the model scores of every *other*
  benign source (``target_fpr`` of them blocked by the model), and that source's policy FPR
  is measured at it: what a source the threshold never saw would see.
- The threshold to ship is chosen the same way on all benign sources pooled; each attack
  source's TPR is reported at it (attack rows never choose a threshold).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.errors import InvalidRequest
from infershield.training.crossval import repo_of, threshold_for_fpr

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ScoredRow:
    source: str
    label: str
    model: float
    rules_blocked: bool


def load_rows(path: Path) -> list[ScoredRow]:
    """Rows written by ``infershield eval --rows-out``; a bad line is an error naming it."""
    out: list[ScoredRow] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            out.append(ScoredRow(repo_of(str(r["source"])), str(r["label"]), float(r["model"]),
                                 bool(r["rules_blocked"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"{path}:{n}: not a scored row ({exc})") from None
    if not out:
        raise InvalidRequest(f"{path}: no rows")
    return out


def choose(rows: Sequence[ScoredRow], target_fpr: float, *, floor: float = 0.0,
           min_rows: int = 5) -> dict[str, Any]:
    """The leave-one-source-out report (see the module docstring). ``floor``: the threshold
    never goes below it (e.g. the shipped one, when only raising it is on the table)."""
    src = np.array([r.source for r in rows])
    benign = np.array([r.label == "benign" for r in rows])
    m = np.array([r.model for r in rows], np.float32)
    rb = np.array([r.rules_blocked for r in rows])
    if benign.all() or not benign.any():
        raise InvalidRequest("choosing a threshold needs benign and attack rows")

    def blocked(t: float) -> npt.NDArray[np.bool_]:
        return rb | (m >= t)

    sources = sorted(set(src[benign].tolist()))
    per_benign = []
    for s in sources:
        mine = benign & (src == s)
        others = benign & (src != s)
        if mine.sum() < min_rows or not others.any():
            continue
        t = max(floor, threshold_for_fpr(m[others], target_fpr))
        per_benign.append({"source": s, "rows": int(mine.sum()), "threshold": t,
                           "fpr_unseen": float(blocked(t)[mine].mean())})
    t_all = max(floor, threshold_for_fpr(m[benign], target_fpr))
    b_all = blocked(t_all)
    per_attack = []
    for s in sorted(set(src[~benign].tolist())):
        mine = ~benign & (src == s)
        if mine.sum() >= min_rows:
            per_attack.append({"source": s, "rows": int(mine.sum()),
                               "tpr": float(b_all[mine].mean())})
    return {
        "target_fpr": target_fpr, "threshold": t_all,
        "benign_fpr": float(b_all[benign].mean()), "attack_tpr": float(b_all[~benign].mean()),
        "benign_rows": int(benign.sum()), "attack_rows": int((~benign).sum()),
        "mean_unseen_source_fpr": float(np.mean([r["fpr_unseen"] for r in per_benign]))
        if per_benign else None,
        "benign_sources": per_benign, "attack_sources": per_attack,
    }


def at_threshold(rows: Sequence[ScoredRow], threshold: float) -> dict[str, float]:
    """Policy FPR and TPR at a fixed threshold (e.g. the shipped one), for comparison."""
    benign = np.array([r.label == "benign" for r in rows])
    b = np.array([r.rules_blocked or r.model >= threshold for r in rows])
    return {"threshold": threshold, "benign_fpr": float(b[benign].mean()),
            "attack_tpr": float(b[~benign].mean())}


def format_report(rep: dict[str, Any], base: dict[str, float]) -> str:
    lines = [
        f"target: {rep['target_fpr']:.2%} of benign rows blocked by the model; "
        f"threshold on all benign sources pooled: {rep['threshold']:.4f}",
        f"policy at it: benign FPR {rep['benign_fpr']:.2%}, attack TPR {rep['attack_tpr']:.3f} "
        f"({rep['benign_rows']} benign / {rep['attack_rows']} attack rows); at "
        f"{base['threshold']:.4f}: FPR {base['benign_fpr']:.2%}, TPR {base['attack_tpr']:.3f}",
        "",
        "| benign source | rows | threshold from the other sources | FPR there |",
        "|---|---|---|---|",
    ]
    for r in sorted(rep["benign_sources"], key=lambda r: -r["fpr_unseen"]):
        lines.append(f"| {r['source']} | {r['rows']} | {r['threshold']:.4f} | "
                     f"{r['fpr_unseen']:.2%} |")
    if rep["mean_unseen_source_fpr"] is not None:
        lines.append(f"\nmean over benign sources: {rep['mean_unseen_source_fpr']:.2%}")
    lines += ["", "| attack source | rows | TPR at the pooled threshold |", "|---|---|---|"]
    for r in sorted(rep["attack_sources"], key=lambda r: r["tpr"]):
        lines.append(f"| {r['source']} | {r['rows']} | {r['tpr']:.3f} |")
    return "\n".join(lines) + "\n"
