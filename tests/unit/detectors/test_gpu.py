"""The shipped classifier on the CUDA execution provider (``make test-gpu``).

Skipped on a machine without onnxruntime's CUDA EP and a GPU; there, ``make test-gpu``
reports the skips instead of passing silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infershield.config import Config
from infershield.detectors.models import ensure_shipped_model
from infershield.detectors.runtime import (
    CUDA,
    FP16_FILE,
    RuntimeOptions,
    SequenceClassifier,
    cuda_expected,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_expected(("cuda",)), reason="no CUDA EP and GPU here"),
]
DATA = Path(__file__).parents[2] / "data"


def _texts() -> list[str]:
    texts: list[str] = []
    for name in ("attacks.jsonl", "hard_negatives.jsonl"):
        lines = (DATA / name).read_text(encoding="utf-8").splitlines()
        texts += [json.loads(line)["text"] for line in lines[:32] if line.strip()]
    return texts


@pytest.mark.parametrize("fp16", [False, True])
def test_cuda_scores_agree_with_the_cpu(fp16: bool) -> None:
    model_dir = ensure_shipped_model(Config().cache_path, fp16=fp16)
    texts = _texts()
    cpu = SequenceClassifier(model_dir, RuntimeOptions(providers=("cpu",))).score(texts)
    gpu_model = SequenceClassifier(model_dir, RuntimeOptions(providers=("cuda",), fp16=fp16))
    assert gpu_model.active_providers[0] == CUDA
    assert gpu_model.model_path.name == (FP16_FILE if fp16 else "model.onnx")
    gpu = gpu_model.score(texts)
    # float16 activations move a probability by a few thousandths at most.
    np.testing.assert_allclose(gpu, cpu, atol=2e-2 if fp16 else 2e-3)
    threshold = float(gpu_model.meta.get("threshold", 0.5))
    far = np.abs(cpu - threshold) > 0.05
    assert ((gpu >= threshold) == (cpu >= threshold))[far].all()
