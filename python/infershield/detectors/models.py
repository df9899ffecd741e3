"""The shipped model: MiniLM embedding + our trained head, built reproducibly into the cache."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from infershield.detectors.bert import load_encoder
from infershield.detectors.export import INT8_SCHEME, export_minilm
from infershield.detectors.head import Head
from infershield.detectors.runtime import FP16_FILE
from infershield.errors import ConfigError

log = logging.getLogger(__name__)

#: Name of the shipped classifier under ``<cache>/models/``.
SHIPPED_MODEL = "injection-minilm"
#: Name of the shipped fast screening model (two pruned encoder layers, int8): the CPU
#: prefilter.
FAST_MODEL = "injection-minilm-fast"
#: Name of the plain embedding model (the ``local`` backend's demo model).
EMBEDDING_MODEL = "minilm-embedding"


def shipped_head_path() -> Path:
    """The committed head weights (trained by ``infershield models train``)."""
    return Path(str(resources.files("infershield") / "models" / "injection_head.npz"))


def frozen_head_path() -> Path:
    """The head trained on frozen base embeddings (``infershield models train``): where
    fine-tuning of the shipped model starts from."""
    return Path(str(resources.files("infershield") / "models" / "frozen_head.npz"))


def shipped_encoder_path() -> Path:
    """The committed fine-tuned encoder layers (float16), merged over the base weights."""
    return Path(str(resources.files("infershield") / "models" / "injection_encoder.npz"))


def fast_head_path() -> Path:
    """The fast model's head (its meta holds ``clear_below``, the prefilter's cut)."""
    return Path(str(resources.files("infershield") / "models" / "fast_head.npz"))


def fast_encoder_path() -> Path:
    """The fast model's two fine-tuned encoder layers (float16; the others are dropped)."""
    return Path(str(resources.files("infershield") / "models" / "fast_encoder.npz"))


@dataclass(frozen=True)
class _Shipped:
    """How a shipped model is built: its weight files and whether model.onnx is int8."""

    head: Path
    encoder: Path
    int8: bool = False


def _shipped(name: str) -> _Shipped:
    if name == SHIPPED_MODEL:
        return _Shipped(shipped_head_path(), shipped_encoder_path())
    if name == FAST_MODEL:
        return _Shipped(fast_head_path(), fast_encoder_path(), int8=True)
    raise ConfigError(f"no shipped model named {name!r}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights_sha256(head_path: Path, encoder_path: Path | None) -> str:
    h = hashlib.sha256(_sha256(head_path).encode())
    if encoder_path is not None and encoder_path.is_file():
        h.update(_sha256(encoder_path).encode())
    return h.hexdigest()


def models_dir(cache_path: Path) -> Path:
    return Path(cache_path) / "models"


def build_classifier(out_dir: Path, head_path: Path | None = None,
                     encoder_path: Path | None = None, *, fp16: bool = False,
                     int8: bool = False) -> Path:
    """Export MiniLM (+ fine-tuned layers from ``encoder_path``) + head to ``out_dir``.

    Without arguments it builds the shipped model. The weights' hash is recorded so stale
    builds are redone. ``fp16`` adds the float16 twin the CUDA EP can run; ``int8`` makes
    ``model.onnx`` the int8 CPU variant (the fast prefilter is built so).
    """
    if head_path is None:
        spec = _shipped(SHIPPED_MODEL)
        head_path, encoder_path = spec.head, spec.encoder
    head = Head.load(head_path)
    encoder = load_encoder(encoder_path) if encoder_path is not None else None
    out = export_minilm(out_dir, head=head, encoder=encoder, fp16=fp16, int8=int8)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["infershield"]["weights_sha256"] = _weights_sha256(head_path, encoder_path)
    if int8:
        cfg["infershield"]["int8"] = INT8_SCHEME
    if encoder is not None:
        cfg["infershield"]["fine_tuned_layers"] = sorted(
            {int(k.split(".")[2]) for k in encoder.weights if k.startswith("encoder.layer.")})
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _is_current(model_dir: Path, *, fp16: bool = False, name: str = SHIPPED_MODEL) -> bool:
    """Whether ``model_dir`` holds a build of shipped model ``name``'s weights as they are
    now (with the float16 twin, when ``fp16``)."""
    spec = _shipped(name)
    try:
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        (model_dir / "model.onnx").is_file()
        and (model_dir / "tokenizer.json").is_file()
        and (not fp16 or (model_dir / FP16_FILE).is_file())
        and cfg.get("infershield", {}).get("weights_sha256")
        == _weights_sha256(spec.head, spec.encoder)
        # An int8 build of an older scheme (per-batch activation scales) is stale too.
        and cfg["infershield"].get("int8", False) == (INT8_SCHEME if spec.int8 else False)
    )


def ensure_shipped_model(cache_path: Path, *, build: bool = True, force: bool = False,
                         fp16: bool = False, name: str = SHIPPED_MODEL) -> Path:
    """Return a shipped classifier's directory (``name``: :data:`SHIPPED_MODEL` or
    :data:`FAST_MODEL`), building it first when missing or stale (or, with ``fp16``, when it
    lacks the float16 twin).

    Concurrent processes serialise on a lock file, so a server and a test run starting at the
    same time build it once. With ``build=False`` a missing model is a ConfigError.
    """
    spec = _shipped(name)
    target = models_dir(cache_path) / name
    if not force and _is_current(target, fp16=fp16, name=name):
        return target
    if not build:
        if _is_current(target, name=name):
            return target  # no float16 twin: the runtime says so and runs model.onnx
        raise ConfigError(
            f"classifier model not built at {target}: run `infershield models build`"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not _is_current(target, fp16=fp16, name=name):
            log.info("building classifier model into %s", target)
            build_classifier(target, spec.head, spec.encoder, fp16=fp16, int8=spec.int8)
    return target


def ensure_embedding_model(cache_path: Path) -> Path:
    """The plain MiniLM embedding model in the cache (built on first use)."""
    from infershield.detectors.export import build_embedding_model

    target = models_dir(cache_path) / EMBEDDING_MODEL
    if (target / "model.onnx").is_file() and (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{EMBEDDING_MODEL}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "model.onnx").is_file():
            build_embedding_model(target)
    return target
