"""A lexical detector, measured as a second opinion next to the encoder (not shipped:
``models/HISTORY.md``, 2026-12-06): hashed byte and word n-grams and a logistic regression,
fitted with full-batch Adam in numpy, and its cross-source run.

A text is cut into half-overlapping chunks of at most :data:`CHUNK_CHARS` characters and its
score is the highest chunk score, so one injected sentence in a long text is not averaged
away. In training, a benign text's chunks are all negatives; an attack text's chunks are
positives sharing the text's weight at first, then (``rounds``) only its highest-scoring
chunk (multiple-instance learning, as for the span head). Rows are weighted so that every
source repository and both classes count alike: a big source must not teach its style.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from infershield.training.crossval import CrossSource, assign_folds, repo_of, threshold_for_fpr
from infershield.training.training import Row, binary_target

log = logging.getLogger(__name__)
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Hash space: 2**BITS buckets (weights stored as float16).
BITS = 18
CHUNK_CHARS = 1200
#: Byte n-gram lengths, each hashed with its own salt.
BYTE_NGRAMS = (3, 4, 5)
_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")
_MULT = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(1099511628211)


def normalise(text: str) -> str:
    """NFKC, lower case, runs of white space as one space (the forms the hash sees)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def chunks(text: str) -> list[str]:
    """Half-overlapping chunks of at most :data:`CHUNK_CHARS` characters (one if shorter)."""
    if len(text) <= CHUNK_CHARS:
        return [text]
    step = CHUNK_CHARS // 2
    out = [text[s : s + CHUNK_CHARS] for s in range(0, len(text) - step, step)]
    return out


def _bucket(h: npt.NDArray[np.uint64], salt: int, bits: int) -> I64:
    with np.errstate(over="ignore"):
        mixed = (h ^ np.uint64(salt)) * _MULT
    return (mixed >> np.uint64(64 - bits)).astype(np.int64)


def hashed(chunk: str, bits: int = BITS) -> tuple[I64, F32]:
    """One normalised chunk as a sparse vector: bucket indices and log-count values,
    L2-normalised."""
    b = np.frombuffer(chunk.encode("utf-8", "replace"), np.uint8).astype(np.uint64)
    parts: list[I64] = []
    with np.errstate(over="ignore"):
        for n in BYTE_NGRAMS:
            if len(b) < n:
                continue
            m = len(b) - n + 1
            h = np.zeros(m, np.uint64)
            for j in range(n):
                h = h * _PRIME + b[j : j + m]
            parts.append(_bucket(h, n, bits))
    words = _WORD.findall(chunk)
    if words:
        wh = np.array([zlib.crc32(w.encode("utf-8", "replace")) for w in words], np.uint64)
        parts.append(_bucket(wh, 101, bits))
        if len(wh) > 1:
            with np.errstate(over="ignore"):
                parts.append(_bucket(wh[:-1] * _PRIME + wh[1:], 102, bits))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx, counts = np.unique(np.concatenate(parts), return_counts=True)
    val = np.log1p(counts).astype(np.float32)
    val /= np.float32(np.sqrt(float((val * val).sum())))
    return idx, val


def text_units(text: str, bits: int = BITS) -> list[tuple[I64, F32]]:
    """The sparse vectors of a text's chunks."""
    return [hashed(c, bits) for c in chunks(normalise(text))]


@dataclass(frozen=True)
class LexicalModel:
    """Logistic regression weights over the hash space, and the recommended threshold."""

    weights: F32
    bias: float
    threshold: float
    meta: dict[str, Any]

    @property
    def bits(self) -> int:
        return len(self.weights).bit_length() - 1

    def chunk_logits(self, units: list[tuple[I64, F32]]) -> F32:
        return np.array([float(self.weights[i] @ v) + self.bias for i, v in units], np.float32)

    def score(self, text: str) -> float:
        """Attack probability of ``text``: the highest over its chunks."""
        logits = self.chunk_logits(text_units(text, self.bits))
        z = float(logits.max()) if len(logits) else self.bias
        return float(1.0 / (1.0 + np.exp(-z)))

    def save(self, path: Path) -> None:
        np.savez_compressed(path, weights=self.weights.astype(np.float16),
                            bias=np.array(self.bias, np.float32),
                            threshold=np.array(self.threshold, np.float32),
                            meta=np.array(json.dumps(self.meta, sort_keys=True)))

    @classmethod
    def load(cls, path: Path) -> LexicalModel:
        """Loads a model saved by :meth:`save`; a file that is not one is an error."""
        with np.load(path, allow_pickle=False) as z:
            w = z["weights"].astype(np.float32)
            bias = float(z["bias"])
            thr = float(z["threshold"])
            meta = json.loads(str(z["meta"]))
        if w.ndim != 1 or len(w) & (len(w) - 1) or not 0.0 < thr < 1.0:
            raise ValueError(f"{path}: not a lexical model (weights {w.shape}, threshold {thr})")
        return cls(w, bias, thr, meta)


@dataclass
class Units:
    """Every chunk of every text as one flat sparse matrix (CSR-like)."""

    idx: I64  # bucket of each non-zero
    val: F32  # value of each non-zero
    unit_of_nz: I64  # unit (chunk) of each non-zero
    owner: I64  # text of each unit
    n_units: int

    def logits(self, w: F32, b: float) -> F32:
        out = np.bincount(self.unit_of_nz, weights=w[self.idx] * self.val,
                          minlength=self.n_units)
        return (out + b).astype(np.float32)

    def grad(self, r: F32) -> F32:
        """X^T r for per-unit residuals ``r``."""
        return np.bincount(self.idx, weights=self.val * r[self.unit_of_nz],
                           minlength=1 << BITS).astype(np.float32)


def featurise(texts: Sequence[str]) -> Units:
    idx: list[I64] = []
    val: list[F32] = []
    uid: list[I64] = []
    owner: list[int] = []
    u = 0
    for t_i, t in enumerate(texts):
        for i, v in text_units(t):
            idx.append(i)
            val.append(v)
            uid.append(np.full(len(i), u, np.int64))
            owner.append(t_i)
            u += 1
    return Units(np.concatenate(idx), np.concatenate(val), np.concatenate(uid),
                 np.array(owner, np.int64), u)


def subset(units: Units, texts: I64) -> Units:
    """The units of the texts ``texts`` (renumbered in that order)."""
    new_text = np.full(int(units.owner.max()) + 1, -1, np.int64)
    new_text[texts] = np.arange(len(texts))
    keep_u = np.flatnonzero(new_text[units.owner] >= 0)
    # Units keep their original order; texts are renumbered.
    new_u = np.full(units.n_units, -1, np.int64)
    new_u[keep_u] = np.arange(len(keep_u))
    nz = new_u[units.unit_of_nz] >= 0
    return Units(units.idx[nz], units.val[nz], new_u[units.unit_of_nz[nz]],
                 new_text[units.owner[keep_u]], len(keep_u))


def text_max(units: Units, unit_scores: F32, n_texts: int) -> F32:
    out = np.full(n_texts, -np.inf, np.float32)
    np.maximum.at(out, units.owner, unit_scores)
    return out


def fit(units: Units, y: I64, w_text: F32, *, l2: float = 1e-5, iters: int = 60,
        lr: float = 0.1, rounds: int = 1) -> tuple[F32, float]:
    """Weights and bias of the logistic regression (see the module docstring)."""
    n_texts = len(y)
    n_chunks = np.bincount(units.owner, minlength=n_texts).astype(np.float32)
    yu = y[units.owner].astype(np.float32)
    # Benign: every chunk, a text's weight spread over at most 4 chunks' worth.
    wb = w_text[units.owner] * np.minimum(1.0, 4.0 / n_chunks[units.owner])
    wu = np.where(yu == 0, wb, w_text[units.owner] / n_chunks[units.owner]).astype(np.float32)
    w = np.zeros(1 << BITS, np.float32)
    b = 0.0
    for rnd in range(rounds + 1):
        if rnd > 0:
            s = units.logits(w, b)
            order = np.lexsort((-s, units.owner))
            first = np.ones(len(order), bool)
            first[1:] = units.owner[order][1:] != units.owner[order][:-1]
            top = np.zeros(units.n_units, bool)
            top[order[first]] = True
            wu = np.where(yu == 0, wb, np.where(top, w_text[units.owner], 0.0)).astype(np.float32)
        wu = wu / wu.sum()
        w, b = _adam(units, yu, wu, w, b, l2=l2, iters=iters, lr=lr)
    return w, b


def _adam(units: Units, yu: F32, wu: F32, w: F32, b: float, *, l2: float, iters: int,
          lr: float) -> tuple[F32, float]:
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    mb = vb = 0.0
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t in range(1, iters + 1):
        z = units.logits(w, b)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        r = ((p - yu) * wu).astype(np.float32)
        g = units.grad(r) + l2 * w
        gb = float(r.sum())
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mb = b1 * mb + (1 - b1) * gb
        vb = b2 * vb + (1 - b2) * gb * gb
        c1, c2 = 1 - b1**t, 1 - b2**t
        w = (w - lr * (m / c1) / (np.sqrt(v / c2) + eps)).astype(np.float32)
        b -= lr * (mb / c1) / (np.sqrt(vb / c2) + eps)
    return w, b


def balanced_weights(rows: Sequence[Row]) -> F32:
    """Each (source repository, class) gets weight proportional to sqrt(its rows), and the
    two classes the same total: big sources count, but do not dominate."""
    y = [binary_target(r.label) for r in rows]
    keys = [(repo_of(r.source), yy) for r, yy in zip(rows, y, strict=True)]
    n = Counter(keys)
    w = np.array([1.0 / np.sqrt(n[k]) for k in keys], np.float32)
    ya = np.array(y)
    for c in (0, 1):
        m = ya == c
        if m.any():
            w[m] /= w[m].sum()
    return w


@dataclass
class LexicalCV:
    rows: list[Row]
    fold: I64
    scores: F32  # out-of-fold text probabilities
    fold_thresholds: list[float]
    k: int

    def as_cross_source(self) -> CrossSource:
        """The same shape as the encoder head's run, for :func:`format_cv`."""
        return CrossSource(self.rows, self.fold, self.scores, self.fold_thresholds, self.k)


def capped(rows: Sequence[Row], idx: I64, cap: int) -> I64:
    """At most ``cap`` of ``idx`` per (source repository, label), picked by a text hash
    (deterministic): bounds the training time; the weights already balance sources."""
    if cap <= 0:
        return idx
    keyed = sorted(idx.tolist(), key=lambda i: zlib.crc32(rows[i].text.encode("utf-8", "replace")))
    seen: Counter[tuple[str, str]] = Counter()
    keep = []
    for i in keyed:
        k = (repo_of(rows[i].source), rows[i].label)
        if seen[k] < cap:
            seen[k] += 1
            keep.append(i)
    return np.array(sorted(keep), np.int64)


def cross_source(rows: Sequence[Row], always: Sequence[Row], *, k: int = 5,
                 fpr: float = 0.01, cap: int = 0, **fit_kw: float) -> LexicalCV:
    """Group k-fold by source repository: each fold scored by a model trained on the other
    folds (at most ``cap`` rows per source and label) plus ``always`` (written rows; never
    scored)."""
    rows = list(rows)
    all_rows = rows + list(always)
    units = featurise([r.text for r in all_rows])
    y = np.array([binary_target(r.label) for r in all_rows], np.int64)
    fmap = assign_folds(rows, k)
    fold = np.array([fmap[repo_of(r.source)] for r in rows] + [-1] * len(always), np.int64)
    scores = np.zeros(len(rows), np.float32)
    for f in range(k):
        tr = np.flatnonzero(fold != f)
        tr = np.concatenate([capped(all_rows, tr[tr < len(rows)], cap), tr[tr >= len(rows)]])
        te = np.flatnonzero(fold == f)
        sub = subset(units, tr)
        wt = balanced_weights([all_rows[i] for i in tr])
        w, b = fit(sub, y[tr], wt, **fit_kw)  # type: ignore[arg-type]
        ste = subset(units, te)
        z = text_max(ste, ste.logits(w, b), len(te))
        scores[te] = 1.0 / (1.0 + np.exp(-z))
        log.info("fold %d done", f)
    fold_s = fold[: len(rows)]
    ys = y[: len(rows)]
    thr = [threshold_for_fpr(scores[(fold_s != f) & (ys == 0)], fpr) for f in range(k)]
    return LexicalCV(rows, fold_s, scores, thr, k)
