"""Training and evaluation of the shipped head (numpy only; no notebook, no torch).

Labels: ``injection`` and ``jailbreak`` are attacks; ``benign`` is benign. ``harmful``
(plain harmful requests with no attack wrapper) is left out of training on purpose: blocking
harmful *topics* is content moderation, not injection detection, and training either way would
teach the head the topic instead of the wrapper. Evaluation reports it separately.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from infershield.detectors.head import Head
from infershield.detectors.runtime import special_tokens, window_starts
from infershield.errors import ConfigError, InvalidRequest
from infershield.training.head import average_heads, train_head

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
ATTACK = ("injection", "jailbreak")
BENIGN = "benign"
HEAD_LABELS = ("benign", "injection")


@dataclass(frozen=True, slots=True)
class Row:
    text: str
    label: str
    source: str = ""


def load_jsonl(path: Path, *, label: bool = True) -> list[Row]:
    """Read ``{"text", "label"[, "source"]}`` rows; a bad line is an error naming the line.

    With ``label=False`` only ``text`` is required (a missing label reads as ``""``).
    """
    rows: list[Row] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{path}:{n}: invalid JSON ({exc.msg})") from None
        if (not isinstance(rec, dict) or not isinstance(rec.get("text"), str)
                or not isinstance(rec.get("label", "" if not label else None), str)):
            raise InvalidRequest(f'{path}:{n}: expected {{"text": str, "label": str}}')
        rows.append(Row(rec["text"], rec.get("label", ""), str(rec.get("source", ""))))
    if not rows:
        raise InvalidRequest(f"{path}: no rows")
    return rows


def source_family(source: str) -> str:
    """Coarse source key for per-source reports: ``owner/repo:first/dir``."""
    repo, _, path = source.partition(":")
    path = path.split(" (")[0].split("+")[0]
    parts = path.split("/")
    return f"{repo}:{'/'.join(parts[:2])}" if path else repo


def split_dev(rows: Sequence[Row], frac: float = 0.2) -> tuple[list[Row], list[Row]]:
    """Deterministic dev split, stratified by (source family, label) via a text hash."""
    train: list[Row] = []
    dev: list[Row] = []
    for r in rows:
        h = int(hashlib.sha256(f"{source_family(r.source)}|{r.text}".encode()).hexdigest()[:8], 16)
        (dev if h / 0xFFFFFFFF < frac else train).append(r)
    return train, dev


def binary_target(label: str) -> int | None:
    """1 attack, 0 benign, None for labels the head does not train on."""
    if label in ATTACK:
        return 1
    if label == BENIGN:
        return 0
    return None


def window_ids(text_ids: list[int], body: int, prefix: list[int], suffix: list[int],
               max_windows: int) -> list[list[int]]:
    """The runtime's windows (:func:`~infershield.detectors.runtime.window_starts` with its
    default half-window stride), each wrapped in the special tokens; at most ``max_windows``
    of them, spread evenly and always including the first and last."""
    starts = window_starts(len(text_ids), body, max(1, body // 2))
    if len(starts) > max_windows:  # keep an even spread incl. first and last
        pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in sorted(set(pick.tolist()))]
    return [prefix + text_ids[s : s + body] + suffix for s in starts]


class Embedder:
    """Runs the plain MiniLM embedding model over token windows (training-time only)."""

    def __init__(self, model_dir: Path, *, window: int = 256, threads: int = 2,
                 cache_dir: Path | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_truncation()
        self.tok.no_padding()
        self.prefix, self.suffix = special_tokens(self.tok)
        self.body = window - len(self.prefix) - len(self.suffix)
        self.cache_dir = cache_dir
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(model_dir / "model.onnx"), so,
                                         providers=["CPUExecutionProvider"])

    def windows(self, text_ids: list[int], max_windows: int) -> list[list[int]]:
        return window_ids(text_ids, self.body, self.prefix, self.suffix, max_windows)

    def cache_path(self, texts: Sequence[str], max_windows: int) -> Path | None:
        """Where :meth:`embed` memoises ``texts`` (None without a cache dir)."""
        if self.cache_dir is None:
            return None
        h = hashlib.sha256(f"{self.body}|{max_windows}".encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass") + b"\0")
        return Path(self.cache_dir) / f"emb-{h.hexdigest()[:24]}.npz"

    def embed(self, texts: Sequence[str], *, max_windows: int = 6,
              batch_tokens: int = 8192) -> tuple[F32, npt.NDArray[np.int64]]:
        """Embeddings of every window, and the index of the text each window came from.

        With ``cache_dir`` set, results are memoised on disk keyed by a hash of the texts and
        settings, so re-training with other hyper-parameters skips the encoder.
        """
        cache_file = self.cache_path(texts, max_windows)
        if cache_file is not None and cache_file.is_file():
            with np.load(cache_file) as z:
                return z["x"].astype(np.float32), z["owner"].astype(np.int64)
        wins: list[list[int]] = []
        owner: list[int] = []
        for i, enc in enumerate(self.tok.encode_batch(list(texts), add_special_tokens=False)):
            ws = self.windows(enc.ids, max_windows)
            wins += ws
            owner += [i] * len(ws)
        out = np.zeros((len(wins), 384), np.float32)
        order = sorted(range(len(wins)), key=lambda i: len(wins[i]))
        start = 0
        t0 = time.monotonic()
        while start < len(order):
            length = len(wins[order[min(start + 1, len(order) - 1)]])
            n = max(1, min(64, batch_tokens // max(length, 1)))
            idx = order[start : start + n]
            length = max(len(wins[i]) for i in idx)
            ids = np.zeros((len(idx), length), np.int64)
            mask = np.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, : len(wins[i])] = wins[i]
                mask[r, : len(wins[i])] = 1
            emb = self.sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if out.shape[1] != emb.shape[1]:
                out = np.zeros((len(wins), emb.shape[1]), np.float32)
            out[idx] = emb
            start += len(idx)
        log.info("embedded %d windows in %.1fs", len(wins), time.monotonic() - t0)
        owners = np.array(owner, np.int64)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache_file, x=out, owner=owners)
        return out, owners


def fit_head(
    emb: F32, owner: npt.NDArray[np.int64], y: npt.NDArray[np.int64], *,
    weights: F32 | None = None, hidden: int = 64, epochs: int = 40, seed: int = 0,
    label_smoothing: float = 0.0,
) -> Head:
    """Two-round multiple-instance training over windows.

    Round 1: every window of a benign text is benign; the windows of an attack text share
    its weight. Round 2: an attack text spanning several windows keeps only its most
    attack-like window as positive, since the injected instruction sits in one of them.
    """
    n_win = np.bincount(owner, minlength=len(y)).astype(np.float32)
    yw = y[owner]
    base_w = np.ones(len(y), np.float32) if weights is None else weights
    w = np.where(yw == 1, 1.0 / n_win[owner], 1.0).astype(np.float32) * base_w[owner]
    head = train_head(emb, yw, HEAD_LABELS, hidden=hidden, epochs=epochs, sample_weight=w,
                      seed=seed, label_smoothing=label_smoothing)
    p = head.probs(emb)[:, 1]
    keep = np.ones(len(owner), bool)
    for t in np.flatnonzero((y == 1) & (n_win > 1)):
        wins = np.flatnonzero(owner == t)
        keep[wins] = False
        keep[wins[np.argmax(p[wins])]] = True
    w2 = (base_w[owner])[keep]
    return train_head(emb[keep], yw[keep], HEAD_LABELS, hidden=hidden, epochs=epochs,
                      sample_weight=w2, seed=seed, label_smoothing=label_smoothing)


def fit_ensemble(
    emb: F32, owner: npt.NDArray[np.int64], y: npt.NDArray[np.int64], *,
    weights: F32 | None = None, hidden: int = 256, epochs: int = 40, seeds: Sequence[int] = (0,),
    label_smoothing: float = 0.0,
) -> Head:
    """:func:`fit_head` once per seed, averaged into one head (:func:`average_heads`)."""
    heads = [fit_head(emb, owner, y, weights=weights, hidden=hidden, epochs=epochs, seed=s,
                      label_smoothing=label_smoothing) for s in seeds]
    return heads[0] if len(heads) == 1 else average_heads(heads)


def text_scores(head: Head, emb: F32, owner: npt.NDArray[np.int64], n_texts: int) -> F32:
    """Max over windows of the attack probability, per text."""
    p = head.probs(emb)[:, 1]
    out = np.zeros(n_texts, np.float32)
    np.maximum.at(out, owner, p)
    return out


# ------------------------------------------------------------------------------ metrics


def auc(y: npt.NDArray[np.int64], s: F32) -> float:
    """ROC AUC via the rank statistic (ties get the average rank)."""
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def threshold_at_fpr(neg_scores: F32, fpr: float) -> float:
    """Smallest threshold whose false-positive rate (score >= t) is at most ``fpr``."""
    if len(neg_scores) == 0:
        return 0.5
    s = np.sort(neg_scores)[::-1]
    k = int(np.floor(fpr * len(s)))  # number of negatives allowed at or above t
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.float32(np.inf)))


def tpr_at_fpr(y: npt.NDArray[np.int64], s: F32, fpr: float) -> tuple[float, float]:
    """(TPR, threshold) at the threshold giving FPR <= ``fpr`` on the negatives."""
    t = threshold_at_fpr(s[y == 0], fpr)
    pos = s[y == 1]
    return (float((pos >= t).mean()) if len(pos) else float("nan")), t


def dev_metrics(y: npt.NDArray[np.int64], s: F32, target_fpr: float
                ) -> tuple[float, dict[str, float]]:
    """The recommended threshold (``target_fpr`` on the negatives, clamped to [0.05, 0.99])
    and the dev metrics stored with a head."""
    thr = min(max(threshold_at_fpr(s[y == 0], target_fpr), 0.05), 0.99)
    return thr, {
        "dev_auc": auc(y, s), "dev_tpr_at_1pct": tpr_at_fpr(y, s, 0.01)[0],
        "dev_tpr_at_threshold": float((s[y == 1] >= thr).mean()),
        "dev_fpr_at_threshold": float((s[y == 0] >= thr).mean()),
    }


def train_on_rows(
    rows: Sequence[Row], embedding_dir: Path, *, dev_frac: float = 0.2, target_fpr: float = 0.005,
    extra: Iterable[Row] = (), extra_weight: float = 4.0, hidden: int = 256, epochs: int = 60,
    seeds: Sequence[int] = (0,), label_smoothing: float = 0.0,
    cache_dir: Path | None = None,
) -> tuple[Head, dict[str, float]]:
    """Train a head on ``rows`` (+ ``extra`` hand-written rows, all in train) and pick its
    threshold at ``target_fpr`` on the held-out dev split. Returns the head and dev metrics.

    ``extra`` rows weigh ``extra_weight`` times a data row: they are few, but they are the only
    direct injections and hard negatives in many styles and languages. With several ``seeds``
    the head is the mean of one MLP per seed; ``label_smoothing`` > 0 keeps scores from
    saturating at 1.0. The defaults reproduce the shipped head.
    """
    train, dev = split_dev(rows, dev_frac)
    extra_rows = [r for r in extra if binary_target(r.label) is not None]
    train = [r for r in train if binary_target(r.label) is not None]
    weights = np.r_[np.ones(len(train)), np.full(len(extra_rows), extra_weight)].astype(np.float32)
    dev = [r for r in dev if binary_target(r.label) is not None]
    if len({binary_target(r.label) for r in [*train, *extra_rows]}) < 2:
        raise ConfigError("training needs both attack (injection/jailbreak) and benign rows")
    emb_model = Embedder(embedding_dir, cache_dir=cache_dir)
    # Data rows and extra rows are embedded (and cached) apart, so editing the examples does
    # not re-embed the data set.
    x, owner = emb_model.embed([r.text for r in train])
    if extra_rows:
        xe, oe = emb_model.embed([r.text for r in extra_rows])
        x, owner = np.concatenate([x, xe]), np.concatenate([owner, oe + len(train)])
    train += extra_rows
    y = np.array([binary_target(r.label) for r in train], np.int64)
    head = fit_ensemble(x, owner, y, weights=weights, hidden=hidden, epochs=epochs, seeds=seeds,
                        label_smoothing=label_smoothing)
    metrics: dict[str, float] = {"train_rows": float(len(train)), "dev_rows": float(len(dev))}
    threshold = 0.5
    if dev and len({binary_target(r.label) for r in dev}) == 2:
        xd, od = emb_model.embed([r.text for r in dev])
        yd = np.array([binary_target(r.label) for r in dev], np.int64)
        threshold, dev_m = dev_metrics(yd, text_scores(head, xd, od, len(dev)), target_fpr)
        metrics.update(dev_m)
    meta = {k: f"{v:.4f}" for k, v in metrics.items()}
    return Head(head.w1, head.b1, head.w2, head.b2, head.labels, threshold, meta), metrics
