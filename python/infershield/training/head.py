"""Training of the classification head (:class:`~infershield.detectors.head.Head`): Adam in
plain numpy, and averaging of several heads into one wider MLP."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from infershield.detectors.head import Head

F32 = npt.NDArray[np.float32]


def average_heads(heads: list[Head]) -> Head:
    """One head whose logits are the mean of ``heads``' logits (MLPs with a hidden layer).

    The hidden layers are concatenated and the output layers stacked and divided by the
    count, so the ensemble runs as a single, wider MLP in the exported graph.
    """
    if not heads or any(not h.w1.size for h in heads):
        raise ValueError("average_heads: needs at least one MLP head")
    if len({h.labels for h in heads}) != 1 or len({h.in_dim for h in heads}) != 1:
        raise ValueError("average_heads: heads differ in labels or input size")
    k = np.float32(len(heads))
    return Head(
        np.concatenate([h.w1 for h in heads], 1), np.concatenate([h.b1 for h in heads]),
        (np.concatenate([h.w2 for h in heads], 0) / k).astype(np.float32),
        (np.sum([h.b2 for h in heads], 0) / k).astype(np.float32), heads[0].labels,
    )


def train_head(
    x: F32,
    y: npt.NDArray[np.int64],
    labels: tuple[str, ...],
    *,
    hidden: int = 64,
    epochs: int = 60,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    sample_weight: F32 | None = None,
    batch_size: int = 128,
    seed: int = 0,
    label_smoothing: float = 0.0,
) -> Head:
    """Train the head with Adam on weighted softmax cross-entropy (numpy only, deterministic).

    Classes are re-weighted to balance, times ``sample_weight`` when given. With
    ``label_smoothing`` = e the target puts 1 - e on the true class and spreads e evenly over
    all classes, which keeps the head from saturating on inputs unlike its training data.
    """
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError("train_head: x must be (n, d) with one label per row")
    n_cls = len(labels)
    if y.min() < 0 or y.max() >= n_cls:
        raise ValueError("train_head: label index out of range")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError("train_head: label_smoothing must be in [0, 1)")
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    counts = np.bincount(y, minlength=n_cls).astype(np.float64)
    cw = np.where(counts > 0, len(y) / (n_cls * np.maximum(counts, 1)), 0.0)
    sw = cw[y] * (sample_weight if sample_weight is not None else 1.0)
    sw = (sw / sw.mean()).astype(np.float32)

    params: list[F32]
    if hidden > 0:
        params = [
            (rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d)).astype(np.float32),
            np.zeros(hidden, np.float32),
            (rng.standard_normal((hidden, n_cls)) * np.sqrt(1.0 / hidden)).astype(np.float32),
            np.zeros(n_cls, np.float32),
        ]
    else:
        params = [np.zeros((d, 0), np.float32), np.zeros(0, np.float32),
                  np.zeros((d, n_cls), np.float32), np.zeros(n_cls, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    b1_, b2_, eps = 0.9, 0.999, 1e-8
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            xb, yb, wb = x[idx], y[idx], sw[idx]
            w1, b1, w2, b2 = params
            if hidden > 0:
                pre = xb @ w1 + b1
                h = np.maximum(pre, 0.0)
            else:
                h = xb
            z = h @ w2 + b2
            z = np.exp(z - z.max(1, keepdims=True))
            p = z / z.sum(1, keepdims=True)
            g = p
            g[np.arange(len(yb)), yb] -= 1.0 - label_smoothing
            if label_smoothing:
                g -= label_smoothing / n_cls
            g *= (wb / len(yb))[:, None]
            grads = [np.zeros_like(w1), np.zeros_like(b1), h.T @ g, g.sum(0)]
            if hidden > 0:
                gh = (g @ w2.T) * (pre > 0)
                grads[0], grads[1] = xb.T @ gh, gh.sum(0)
            step += 1
            for i, (pr, gr) in enumerate(zip(params, grads, strict=True)):
                if pr.size == 0:
                    continue
                if pr.ndim == 2:
                    gr = gr + weight_decay * pr
                m[i] = b1_ * m[i] + (1 - b1_) * gr
                v[i] = b2_ * v[i] + (1 - b2_) * gr * gr
                mh = m[i] / (1 - b1_**step)
                vh = v[i] / (1 - b2_**step)
                params[i] = (pr - lr * mh / (np.sqrt(vh) + eps)).astype(np.float32)
    return Head(params[0], params[1], params[2], params[3], labels)
