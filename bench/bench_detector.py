"""The ONNX classifier detector: latency at batch 1 and throughput at batch 32, 256 tokens.

Baseline, in the same run: plain onnxruntime on the same model file and thread settings, fed
pre-tokenised 256-token inputs (no tokenisation, windowing or batching of ours). Ours:

* ``runtime``: :class:`SequenceClassifier.score` (tokenise + window + forward);
* ``check``: :class:`ClassifierCheck.check` (through the micro-batcher, one caller);
* ``check_batch``: a batch of 32 scored directly (windows sorted by length);
* ``concurrent``: 32 threads calling ``check`` at once (dynamic micro-batching);
* ``long``: one 2,048-token prompt, every window scored (the no-truncation cost).

Run alone: ``python -m bench.bench_detector [--quick] [--gpu] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    RESULTS_DIR,
    finish,
    suite_result,
    summarize,
    time_calls,
)

SUITE = "detector"
TOKENS = 256
BATCH = 32


def _prompts(tok: Any, n: int, tokens: int, seed: int = 3) -> list[str]:
    """``n`` distinct English-ish prompts of exactly ``tokens`` tokens incl. [CLS]/[SEP]."""
    words = [
        "the",
        "user",
        "asked",
        "about",
        "the",
        "quarterly",
        "report",
        "and",
        "wanted",
        "a",
        "summary",
        "of",
        "revenue",
        "costs",
        "growth",
        "risks",
        "please",
        "ignore",
        "typos",
        "thanks",
        "meeting",
        "schedule",
        "travel",
        "plans",
        "password",
        "reset",
        "account",
        "security",
        "model",
        "training",
        "data",
        "pipeline",
        "latency",
    ]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(words, tokens * 2))
        ids = tok.encode(text, add_special_tokens=False).ids[: tokens - 2]
        out.append(tok.decode(ids))
    return out


def run(*, quick: bool = False, gpu: bool = False, out_dir: Path | None = None) -> dict[str, Any]:
    import onnxruntime as ort

    from infershield.checks.base import CheckContext
    from infershield.checks.input.classifier import ClassifierCheck, ClassifierOptions
    from infershield.detectors.models import ensure_shipped_model
    from infershield.detectors.runtime import RuntimeOptions, SequenceClassifier

    cache = Path(os.environ.get("INFERSHIELD_BENCH_CACHE", tempfile.gettempdir())) / "is-bench"
    t0 = time.perf_counter()
    model_dir = ensure_shipped_model(cache)
    build_s = time.perf_counter() - t0
    providers = ("cuda",) if gpu else ("cpu",)
    iters = 30 if quick else 200
    max_s = 5.0 if quick else 20.0
    threads = min(os.cpu_count() or 1, 4)

    clf = SequenceClassifier(model_dir, RuntimeOptions(providers=providers))
    chk = ClassifierCheck(
        "classifier", ClassifierOptions(providers=providers, max_batch=BATCH), model_dir
    )
    prompts = _prompts(clf.tokenizer, 64, TOKENS)
    assert all(len(w) == TOKENS for p in prompts for w in clf.windows(p)), "prompt length"

    # Baseline: plain onnxruntime, same file, same threads, inputs already tokenised.
    # Same session settings as the runtime uses, so only our own layers differ.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(
        str(model_dir / "model.onnx"), so, providers=list(clf.active_providers)
    )
    ids = np.array([clf.windows(p)[0] for p in prompts], np.int64)
    mask = np.ones_like(ids)
    i = [0]

    def plain1() -> None:
        k = i[0] % len(ids)
        i[0] += 1
        sess.run(None, {"input_ids": ids[k : k + 1], "attention_mask": mask[k : k + 1]})

    def plain32() -> None:
        sess.run(None, {"input_ids": ids[:BATCH], "attention_mask": mask[:BATCH]})

    def ours1() -> None:
        k = i[0] % len(prompts)
        i[0] += 1
        clf.score([prompts[k]])

    def check1() -> None:
        k = i[0] % len(prompts)
        i[0] += 1
        chk.check(CheckContext(text=prompts[k]))

    ctxs = [CheckContext(text=p) for p in prompts[:BATCH]]

    def check32() -> None:
        chk.check_batch(ctxs)

    def concurrent32() -> None:
        barrier = threading.Barrier(BATCH)

        def one(k: int) -> None:
            barrier.wait()
            chk.check(CheckContext(text=prompts[k]))

        ts = [threading.Thread(target=one, args=(k,)) for k in range(BATCH)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    long_text = " ".join(prompts[:8])

    def long1() -> None:
        clf.score([long_text])

    b_iters = max(3, iters // 10)
    cases = [
        ("plain onnxruntime", 1, plain1, iters),
        ("runtime.score", 1, ours1, iters),
        ("check (batcher)", 1, check1, iters),
        ("plain onnxruntime", BATCH, plain32, b_iters),
        ("check_batch", BATCH, check32, b_iters),
        ("concurrent check x32", BATCH, concurrent32, b_iters),
        (f"long prompt ({len(clf.windows(long_text))} windows)", 1, long1, b_iters),
    ]
    rows = []
    for name, batch, fn, n in cases:
        s = summarize(time_calls(fn, iters=n, warmup=5 if batch == 1 else 1, max_seconds=max_s))
        rows.append(
            {
                "case": name,
                "batch": batch,
                "p50_ms": s["p50_ms"],
                "p99_ms": s["p99_ms"],
                "p50_ms_per_prompt": s["p50_ms"] / batch,
                "prompts_per_s": batch * 1000.0 / s["p50_ms"],
                "n": s["n"],
            }
        )
    chk.close()
    headline = {
        "device": "GPU (CUDA EP)" if "CUDAExecutionProvider" in clf.active_providers else "CPU",
        "providers": list(clf.active_providers),
        "intra_op_threads": threads,
        "p50_ms_256_tokens": rows[2]["p50_ms"],
        "plain_ort_p50_ms_batch1_256tok": rows[0]["p50_ms"],
        "prompts_per_s": rows[4]["prompts_per_s"],
        "plain_ort_prompts_per_s_batch32": rows[3]["prompts_per_s"],
        "model_build_s": round(build_s, 2),
    }
    return suite_result(
        SUITE,
        baseline="plain onnxruntime, same model and threads, pre-tokenised input",
        rows=rows,
        headline=headline,
        notes=[f"{TOKENS}-token prompts; model {model_dir.name}; {threads} intra-op threads"],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--json", type=Path, help="write JSON here (default: bench/results/...)")
    args = ap.parse_args(argv)
    res = run(quick=args.quick, gpu=args.gpu)
    return finish(res, args.json or RESULTS_DIR / "detector.json", gpu=args.gpu)


if __name__ == "__main__":
    sys.exit(main())
