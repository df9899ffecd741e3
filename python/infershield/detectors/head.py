"""A small classification head over sentence embeddings: an MLP (or, with no hidden layer,
logistic regression) trained in plain numpy, stored as a tiny ``.npz``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from infershield.errors import ConfigError

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Head:
    """``logits = relu(x @ w1 + b1) @ w2 + b2`` (or ``x @ w2 + b2`` when ``w1`` is empty).

    ``labels[i]`` names logit ``i``; ``threshold`` is the recommended attack-probability cut
    chosen on a held-out split when the head was trained.
    """

    w1: F32
    b1: F32
    w2: F32
    b2: F32
    labels: tuple[str, ...]
    threshold: float = 0.5
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.w2.shape[1] != len(self.labels) or self.b2.shape != (len(self.labels),):
            raise ConfigError("head: output size does not match the number of labels")
        if self.w1.size and self.w1.shape[1] != self.w2.shape[0]:
            raise ConfigError("head: hidden sizes do not match")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"head: threshold must be in (0, 1), got {self.threshold}")

    @property
    def in_dim(self) -> int:
        return int(self.w1.shape[0] if self.w1.size else self.w2.shape[0])

    def logits(self, x: F32) -> F32:
        h = np.maximum(x @ self.w1 + self.b1, 0.0) if self.w1.size else x
        out: F32 = (h @ self.w2 + self.b2).astype(np.float32)
        return out

    def probs(self, x: F32) -> F32:
        z = self.logits(x)
        z = np.exp(z - z.max(1, keepdims=True))
        out: F32 = z / z.sum(1, keepdims=True)
        return out

    def save(self, path: Path) -> None:
        meta_keys = np.array(list(self.meta), dtype=str)
        meta_vals = np.array(list(self.meta.values()), dtype=str)
        np.savez_compressed(
            path, w1=self.w1, b1=self.b1, w2=self.w2, b2=self.b2,
            labels=np.array(self.labels, dtype=str), threshold=np.array(self.threshold),
            meta_keys=meta_keys, meta_vals=meta_vals,
        )

    @classmethod
    def load(cls, path: Path) -> Head:
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(
                    z["w1"].astype(np.float32), z["b1"].astype(np.float32),
                    z["w2"].astype(np.float32), z["b2"].astype(np.float32),
                    tuple(str(s) for s in z["labels"]), float(z["threshold"]),
                    dict(zip((str(k) for k in z["meta_keys"]), (str(v) for v in z["meta_vals"]),
                             strict=True)),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read classifier head {path}: {exc}") from None
