"""Training-side BERT helpers: random weights for tests, the numpy reference forward pass
(the exporter's ground truth) and structured pruning of a layer.

The reference is deliberately plain numpy: the ONNX graph is checked against it in tests, and
it lets training code run without torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from infershield.detectors.bert import BertConfig, Weights, layer_heads

F32 = npt.NDArray[np.float32]


def random_bert(cfg: BertConfig, seed: int = 0) -> Weights:
    """Random weights with the real layout (for fast exporter tests)."""
    rng = np.random.default_rng(seed)
    h, i = cfg.hidden_size, cfg.intermediate_size

    def r(*shape: int) -> F32:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w: Weights = {
        "embeddings.word_embeddings.weight": r(cfg.vocab_size, h),
        "embeddings.position_embeddings.weight": r(cfg.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": r(cfg.type_vocab_size, h),
        "embeddings.LayerNorm.weight": 1.0 + r(h),
        "embeddings.LayerNorm.bias": r(h),
    }
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                  "attention.output.dense"):
            w[p + m + ".weight"], w[p + m + ".bias"] = r(h, h), r(h)
        w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"] = r(i, h), r(i)
        w[p + "output.dense.weight"], w[p + "output.dense.bias"] = r(h, i), r(h)
        for m in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + m + ".weight"], w[p + m + ".bias"] = 1.0 + r(h), r(h)
    return w


def prune_layer(cfg: BertConfig, w: Weights, layer: int, heads: Sequence[int],
                neurons: Sequence[int]) -> Weights:
    """Layer ``layer``'s weights keeping only attention ``heads`` and FFN ``neurons`` (indices
    into the current layer). Structured pruning: the result is a smaller dense layer that the
    exporter and the runtime treat like any other."""
    p, hd = f"encoder.layer.{layer}.", cfg.head_dim
    rows = np.concatenate([np.arange(k * hd, (k + 1) * hd) for k in sorted(heads)])
    keep = np.array(sorted(neurons), np.int64)
    out: Weights = {}
    for m in ("query", "key", "value"):
        out[p + f"attention.self.{m}.weight"] = w[p + f"attention.self.{m}.weight"][rows]
        out[p + f"attention.self.{m}.bias"] = w[p + f"attention.self.{m}.bias"][rows]
    out[p + "attention.output.dense.weight"] = w[p + "attention.output.dense.weight"][:, rows]
    out[p + "intermediate.dense.weight"] = w[p + "intermediate.dense.weight"][keep]
    out[p + "intermediate.dense.bias"] = w[p + "intermediate.dense.bias"][keep]
    out[p + "output.dense.weight"] = w[p + "output.dense.weight"][:, keep]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _layer_norm(x: F32, g: F32, b: F32, eps: float) -> F32:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: F32 = (x - mu) / np.sqrt(var + eps) * g + b
    return out


def _gelu(x: F32) -> F32:
    from math import erf

    verf = np.vectorize(erf, otypes=[np.float64])
    out: F32 = (0.5 * x * (1.0 + verf(x / math.sqrt(2.0)))).astype(np.float32)
    return out


def reference_embed(
    cfg: BertConfig,
    w: Weights,
    input_ids: npt.NDArray[np.int64],
    attention_mask: npt.NDArray[np.int64],
) -> F32:
    """Mean-pooled, L2-normalised sentence embeddings (sentence-transformers semantics)."""
    b, s = input_ids.shape
    x = (
        w["embeddings.word_embeddings.weight"][input_ids]
        + w["embeddings.position_embeddings.weight"][np.arange(s)][None]
        + w["embeddings.token_type_embeddings.weight"][0][None, None]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"],
                    cfg.layer_norm_eps)
    m = attention_mask.astype(np.float32)
    bias = ((1.0 - m) * -10000.0)[:, None, None, :]
    hd = cfg.head_dim
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{n}."
        nh = layer_heads(cfg, w, n)

        def lin(t: F32, name: str, p: str = p) -> F32:
            out: F32 = t @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return out

        def heads(t: F32, nh: int = nh) -> F32:
            return t.reshape(b, s, nh, hd).transpose(0, 2, 1, 3)

        q, k, v = (heads(lin(x, f"attention.self.{m_}")) for m_ in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, nh * hd)
        x = _layer_norm(lin(ctx, "attention.output.dense") + x,
                        w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], cfg.layer_norm_eps)
        ff = lin(_gelu(lin(x, "intermediate.dense")), "output.dense")
        x = _layer_norm(ff + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                        cfg.layer_norm_eps)
    pooled = (x * m[:, :, None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1e-9)
    out: F32 = (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )
    return out
