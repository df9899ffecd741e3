"""``infershield eval``: detection quality and latency of model, rules, and both combined."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.checks.base import CheckContext
from infershield.config import CheckSpec, Config
from infershield.detectors.runtime import max_per_text
from infershield.pipeline import Pipeline
from infershield.policy import build_pipeline
from infershield.training.training import BENIGN, Row, auc, source_family, tpr_at_fpr

F32 = npt.NDArray[np.float32]


@dataclass
class Scored:
    scores: F32
    blocked: npt.NDArray[np.bool_]
    latency_ms: F32


def _run(pipe: Pipeline, texts: Sequence[str], batch: int) -> Scored:
    scores, blocked, lat = [], [], []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        t0 = time.perf_counter()
        res = pipe.run_batch([CheckContext(text=t) for t in chunk])
        per = (time.perf_counter() - t0) * 1000.0 / len(chunk)
        scores += [r.score for r in res]
        blocked += [r.blocked for r in res]
        lat += [per] * len(chunk)
    return Scored(np.array(scores, np.float32), np.array(blocked), np.array(lat, np.float32))


def pipelines(config: Config) -> dict[str, Pipeline]:
    """``model`` (classifier checks only; the shipped one if the policy has none) and ``rules``
    (the policy's input checks minus classifiers)."""
    specs = [s for s in config.policy.input if s.enabled]
    model = [s for s in specs if s.type == "classifier"] or [CheckSpec(type="classifier")]
    rules = [s for s in specs if s.type != "classifier"]
    out: dict[str, Pipeline] = {}
    out["model"] = build_pipeline(model, "input", config, fail_fast=False)
    out["rules"] = build_pipeline(rules, "input", config, fail_fast=False)
    return out


def fold_runs(model: Scored, rules: Scored) -> dict[str, Scored]:
    """The two ways to read rules + model together (rules' REDACT rewrites are not fed to the
    model here; the input rules block).

    ``combined`` is the pipeline's own fold: max score, any BLOCK. Sweeping a threshold over
    it also moves the rules' cut-offs, since a rule that matched weakly adds its score.
    ``policy`` is how the policy is operated: the rules block at their own thresholds and the
    classifier's threshold is the knob, so a text the rules block scores 1.0 and every other
    text scores what the model gave it. Its ROC curve is the policy's operating curve.
    """
    latency = model.latency_ms + rules.latency_ms
    blocked = model.blocked | rules.blocked
    return {
        "combined": Scored(np.maximum(model.scores, rules.scores), blocked, latency),
        "policy": Scored(np.where(rules.blocked, 1.0, model.scores), blocked, latency),
    }


def evaluate(rows: Sequence[Row], config: Config, *, batch: int = 32,
             rows_out: Path | None = None) -> dict[str, Any]:
    """Scores every row with each pipeline and returns the metrics as a JSON-ready dict.
    ``rows_out``: also write each row's source, label, model score and whether the rules
    blocked it (JSON lines; input of ``infershield detector threshold``)."""
    pipes = pipelines(config)
    texts = [r.text for r in rows]
    labels = np.array([r.label for r in rows])
    fams = np.array([source_family(r.source) if r.source else "-" for r in rows])
    neg = labels == BENIGN
    report: dict[str, Any] = {"rows": len(rows), "labels": {}, "pipelines": {}}
    for lab in sorted(set(labels.tolist())):
        report["labels"][lab] = int((labels == lab).sum())
    try:
        runs = {name: _run(pipes[name], texts, batch) for name in ("model", "rules")}
        if rows_out is not None:
            with rows_out.open("w", encoding="utf-8") as f:
                for i, r in enumerate(rows):
                    f.write(json.dumps({"source": r.source, "label": r.label,
                                        "model": float(runs["model"].scores[i]),
                                        "rules_blocked": bool(runs["rules"].blocked[i])})
                            + "\n")
        runs.update(fold_runs(runs["model"], runs["rules"]))
        for name, sc in runs.items():
            rep: dict[str, Any] = {
                "latency_ms": {"mean": float(sc.latency_ms.mean()),
                               "p50": float(np.percentile(sc.latency_ms, 50)),
                               "p95": float(np.percentile(sc.latency_ms, 95))},
                "blocked_benign_rate": float(sc.blocked[neg].mean()) if neg.any() else None,
                "per_label": {}, "per_source": {},
            }
            attack_mask = np.isin(labels, ["injection", "jailbreak"])
            groups = {lab: labels == lab for lab in sorted(set(labels.tolist())) if lab != BENIGN}
            if attack_mask.any():
                groups["injection+jailbreak"] = attack_mask
            t1 = None
            for lab, mask in groups.items():
                sel = mask | neg
                y = mask[sel].astype(np.int64)
                s = sc.scores[sel]
                tpr1, t1_lab = tpr_at_fpr(y, s, 0.01)
                tpr5, _ = tpr_at_fpr(y, s, 0.05)
                rep["per_label"][lab] = {
                    "n": int(mask.sum()), "auc": auc(y, s), "tpr_at_1pct_fpr": tpr1,
                    "tpr_at_5pct_fpr": tpr5, "threshold_at_1pct_fpr": t1_lab,
                    "blocked_rate": float(sc.blocked[mask].mean()),
                }
                if lab == "injection+jailbreak":
                    t1 = t1_lab
            if t1 is not None:
                for fam in sorted(set(fams.tolist())):
                    m = fams == fam
                    by_lab: defaultdict[str, int] = defaultdict(int)
                    for lab in labels[m]:
                        by_lab[str(lab)] += 1
                    rep["per_source"][fam] = {
                        "n": int(m.sum()), "labels": dict(by_lab),
                        "flagged_at_1pct_threshold": float((sc.scores[m] >= t1).mean()),
                        "blocked_rate": float(sc.blocked[m].mean()),
                    }
            report["pipelines"][name] = rep
    finally:
        for p in (pipes["model"], pipes["rules"]):
            p.close()
    return report


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate`'s result."""
    lines = [f"rows: {report['rows']}  labels: {report['labels']}"]
    for name, rep in report["pipelines"].items():
        lat = rep["latency_ms"]
        lines.append(f"\n== {name}  latency ms/text mean {lat['mean']:.2f} p50 {lat['p50']:.2f} "
                     f"p95 {lat['p95']:.2f}  benign blocked {rep['blocked_benign_rate']}")
        lines.append(f"{'label':<22}{'n':>6}{'AUC':>8}{'TPR@1%':>9}{'TPR@5%':>9}"
                     f"{'thr@1%':>9}{'blocked':>9}")
        for lab, m in rep["per_label"].items():
            lines.append(f"{lab:<22}{m['n']:>6}{m['auc']:>8.4f}{m['tpr_at_1pct_fpr']:>9.3f}"
                         f"{m['tpr_at_5pct_fpr']:>9.3f}{m['threshold_at_1pct_fpr']:>9.4f}"
                         f"{m['blocked_rate']:>9.3f}")
        if rep["per_source"]:
            lines.append(f"{'source':<70}{'n':>6}{'flag@1%':>9}{'blocked':>9}")
            for fam, m in rep["per_source"].items():
                lines.append(f"{fam[:69]:<70}{m['n']:>6}{m['flagged_at_1pct_threshold']:>9.3f}"
                             f"{m['blocked_rate']:>9.3f}")
    return "\n".join(lines)



@dataclass(frozen=True)
class PrefilterCut:
    """The prefilter's clearing cut and what it costs and saves on the rows it was chosen on."""

    clear_below: float
    caught: int  # attack rows the main model blocks on its own
    lost: int  # of those, the rows the cut clears (the cascade misses them)
    attacks_cleared: float  # share of all attack rows cleared
    benign_cleared: float  # share of benign rows cleared (they skip the main model)

    def as_dict(self) -> dict[str, float | int]:
        return {"clear_below": self.clear_below, "caught": self.caught, "lost": self.lost,
                "attacks_cleared": self.attacks_cleared, "benign_cleared": self.benign_cleared}


def choose_prefilter_cut(fast: F32, main: F32, labels: Sequence[str], threshold: float,
                         max_loss: float) -> PrefilterCut:
    """The highest cut that clears at most ``max_loss`` of the attacks the main model catches.

    ``fast`` and ``main`` are the two models' scores of the same rows; an attack row is
    injection or jailbreak, and it is caught when ``main >= threshold``. A text is cleared
    when ``fast < cut``; the cut never exceeds ``threshold`` (so the cascade cannot block
    anything the main model would allow).
    """
    if not 0.0 <= max_loss < 1.0:
        raise ValueError("max_loss must be in [0, 1)")
    lab = np.asarray(labels)
    attack = np.isin(lab, ["injection", "jailbreak"])
    benign = lab == BENIGN
    caught = np.sort(fast[attack & (main >= threshold)])
    if caught.size == 0:
        raise ValueError("the main model catches none of the attack rows: no cut to choose")
    k = int(np.floor(max_loss * caught.size))  # caught rows the cut may clear
    cut = float(min(caught[k] if k < caught.size else 1.0, threshold))
    return PrefilterCut(
        clear_below=cut, caught=int(caught.size), lost=int((caught < cut).sum()),
        attacks_cleared=float((fast[attack] < cut).mean()),
        benign_cleared=float((fast[benign] < cut).mean()) if benign.any() else 0.0,
    )


def window_keys(fast: F32, main: F32, owner: npt.NDArray[np.int64], n_texts: int,
                threshold: float) -> F32:
    """Per text, the fast score that decides what a per-window cascade does with it.

    ``fast`` and ``main`` score the same windows, ``owner`` names each window's text. For a
    text the main model blocks, the key is the highest fast score among the windows in which
    the main model blocks it (the cascade misses the text only if it clears all of those);
    for any other text, the highest fast score of all its windows (below it, the text never
    reaches the main model). Feed the keys to :func:`choose_prefilter_cut` as ``fast``.
    """
    key = max_per_text(fast, owner, n_texts)
    catch = np.full(n_texts, -np.inf)
    hit = main >= threshold
    np.maximum.at(catch, owner[hit], fast[hit])
    out: F32 = np.where(np.isfinite(catch), catch, key).astype(np.float32)
    return out
