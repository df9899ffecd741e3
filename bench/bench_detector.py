"""The ONNX classifier detector: latency at batch 1 and throughput at batch 32, 256 tokens.

Baseline, in the same run: plain onnxruntime on the same model file and thread settings, fed
pre-tokenised 256-token inputs (no tokenisation, windowing or batching of ours). Ours:

* ``runtime``: :class:`SequenceClassifier.score` (tokenise + window + forward);
* ``check``: :class:`ClassifierCheck.check` (through the micro-batcher, one caller);
* ``check_batch``: a batch of 32 scored directly (windows sorted by length);
* ``concurrent``: 32 threads calling ``check`` at once (dynamic micro-batching);
* ``long``: one 2,048-token prompt, every window scored (the no-truncation cost);
* ``prefilter``: ``check`` with the shipped one-layer prefilter in front (the CPU default),
  on everyday benign prompts (mostly cleared by the fast model) and on attack prompts
  (escalated to the main model); each row says what share the prefilter cleared. The
  ``whole text only`` rows turn off the canonical and content views, the ``sentence units``
  rows turn on localised scoring: the differences to the default row are what they cost.

Run alone: ``python -m bench.bench_detector [--quick] [--gpu] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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


#: Everyday text for benign 256-token prompts (the word-salad prompts above are for speed only).
BENIGN_SENTENCES = [
    "Hi team, the quarterly review moved to Thursday at ten, same room as last time.",
    "Please bring the updated revenue figures and the hiring plan for the next two quarters.",
    "Can you help me write a short thank-you note to my neighbour for watering the plants?",
    "I am planning a three-day trip to Lisbon in May and would like a relaxed itinerary.",
    "What is a good vegetarian dinner I can cook in thirty minutes with rice and spinach?",
    "Explain the difference between a list and a tuple in Python with a small example.",
    "Our build fails on the CI runner with a missing header; the log is pasted below.",
    "Summarise this article about coral reefs for a ten-year-old in five sentences.",
    "The customer says the invoice total does not match the order confirmation email.",
    "Translate the following paragraph into Spanish, keeping the formal tone of the letter.",
    "Draft a polite reminder that the library books are due back next Friday.",
    "Which stretches help with lower back pain after sitting at a desk all day?",
    "Give me three ideas for a birthday party for a seven-year-old who loves dinosaurs.",
    "The meeting notes mention a new supplier for packaging; who owns that decision?",
    "Rewrite this product description so it sounds friendlier and a little shorter.",
    "How do I convert a CSV file with dates into a pandas DataFrame with a datetime index?",
]


def _sentence_prompts(tok: Any, sentences: list[str], n: int, tokens: int,
                      seed: int = 5) -> list[str]:
    """``n`` prompts of exactly ``tokens`` tokens made of whole ``sentences`` in random order."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = " ".join(sentences[k] for k in rng.permutation(len(sentences)))
        while len(tok.encode(text, add_special_tokens=False).ids) < tokens:
            text += " " + " ".join(sentences[k] for k in rng.permutation(len(sentences)))
        ids = tok.encode(text, add_special_tokens=False).ids
        # Decoding can merge or split a few tokens: trim until it re-encodes exactly.
        n = tokens - 2
        for _ in range(8):
            cut = tok.decode(ids[:n])
            got = len(tok.encode(cut, add_special_tokens=False).ids)
            if got == tokens - 2:
                break
            n -= got - (tokens - 2)
        out.append(cut)
    return out


def _attack_sentences() -> list[str]:
    """The repository's attack fixtures (tests/data/attacks.jsonl)."""
    import json

    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "attacks.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def shipped_model_dir(*, fp16: bool = False) -> tuple[Path, float]:
    """The shipped model for a bench (built into the bench cache on first use) and the seconds
    that took. ``INFERSHIELD_BENCH_MODEL_DIR`` names a ready directory instead (a machine
    without the base-model package; ``bench.gpu_pack`` carries a stand-in instead)."""
    from infershield.detectors.models import ensure_shipped_model

    given = os.environ.get("INFERSHIELD_BENCH_MODEL_DIR")
    if given:
        return Path(given), 0.0
    cache = Path(os.environ.get("INFERSHIELD_BENCH_CACHE", tempfile.gettempdir())) / "is-bench"
    t0 = time.perf_counter()
    model_dir = ensure_shipped_model(cache, fp16=fp16)
    return model_dir, time.perf_counter() - t0


def prefilter_dir() -> Path | None:
    """The shipped fast model (the CPU prefilter), or None with a stand-in main model."""
    from infershield.detectors.models import FAST_MODEL, ensure_shipped_model

    if os.environ.get("INFERSHIELD_BENCH_MODEL_DIR"):
        return None
    cache = Path(os.environ.get("INFERSHIELD_BENCH_CACHE", tempfile.gettempdir())) / "is-bench"
    return ensure_shipped_model(cache, name=FAST_MODEL)


def _cases(
    model_dir: Path, *, gpu: bool, fp16: bool, batches: tuple[int, ...], iters: int,
    max_s: float, threads: int, fast_dir: Path | None = None,
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """Every case for one provider and precision; the rows and the providers that ran."""
    import onnxruntime as ort

    from infershield.checks.base import CheckContext
    from infershield.checks.input.classifier import ClassifierCheck, ClassifierOptions
    from infershield.detectors.runtime import FP16_FILE, RuntimeOptions, SequenceClassifier

    providers = ("cuda",) if gpu else ("cpu",)
    top = max(batches)
    clf = SequenceClassifier(model_dir, RuntimeOptions(providers=providers, fp16=fp16,
                                                       max_batch=top))
    chk = ClassifierCheck(
        "classifier", ClassifierOptions(providers=providers, fp16=fp16, max_batch=top),
        model_dir,
    )
    prompts = _prompts(clf.tokenizer, max(64, top), TOKENS)
    assert all(len(w) == TOKENS for p in prompts for w in clf.windows(p)), "prompt length"

    # Baseline: plain onnxruntime, same file, same threads, inputs already tokenised.
    # Same session settings as the runtime uses, so only our own layers differ.
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    on_gpu = "CUDAExecutionProvider" in clf.active_providers
    model_file = FP16_FILE if fp16 and on_gpu else "model.onnx"
    sess = ort.InferenceSession(
        str(model_dir / model_file), so, providers=list(clf.active_providers)
    )
    ids = np.array([clf.windows(p)[0] for p in prompts], np.int64)
    mask = np.ones_like(ids)
    i = [0]

    def plain1() -> None:
        k = i[0] % len(ids)
        i[0] += 1
        sess.run(None, {"input_ids": ids[k : k + 1], "attention_mask": mask[k : k + 1]})

    def plain_n(n: int) -> Callable[[], None]:
        return lambda: sess.run(None, {"input_ids": ids[:n], "attention_mask": mask[:n]})

    def ours1() -> None:
        k = i[0] % len(prompts)
        i[0] += 1
        clf.score([prompts[k]])

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
    one, many = [list(ids[0])], [list(r) for r in ids[:BATCH]]
    # Our forward pass through session.run and, on the CUDA EP, through an IO binding (the
    # runtime's CUDA default), each on a classifier that pins the choice.
    def pinned(io_binding: bool) -> SequenceClassifier:
        return SequenceClassifier(model_dir, RuntimeOptions(
            providers=providers, fp16=fp16, max_batch=top, io_binding=io_binding))

    unbound = pinned(False)
    bound = pinned(True) if on_gpu else None

    def long1() -> None:
        clf.score([long_text])

    b_iters = max(3, iters // 10)
    cases: list[tuple[str, int, Callable[[], None], int]] = [
        ("plain onnxruntime", 1, plain1, iters),
        ("runtime.score", 1, ours1, iters),
        ("check (batcher)", 1, _cycle(chk, prompts), iters),
    ]
    for n in batches:
        cases += [("plain onnxruntime", n, plain_n(n), b_iters),
                  ("check_batch", n, _batch_of(chk, prompts[:n]), b_iters)]
    cases += [("forward (session.run)", 1, lambda: unbound.forward(one), iters),
              ("forward (session.run)", BATCH, lambda: unbound.forward(many), b_iters)]
    if bound is not None:
        cases += [("forward (IO binding)", 1, lambda: bound.forward(one), iters),
                  ("forward (IO binding)", BATCH, lambda: bound.forward(many), b_iters)]
    cases += [
        ("concurrent check x32", BATCH, concurrent32, b_iters),
        (f"long prompt ({len(clf.windows(long_text))} windows)", 1, long1, b_iters),
    ]
    cascaded: ClassifierCheck | None = None
    whole: ClassifierCheck | None = None
    units: ClassifierCheck | None = None
    if fast_dir is not None:
        # The CPU default: the one-layer prefilter clears what it can before the main model;
        # the canonical and content views and the sentence units are on (the default).
        cascaded = ClassifierCheck("classifier", ClassifierOptions(
            providers=providers, max_batch=top), model_dir, fast_dir)
        # The same without the judged views (the text's own windows only), and with sentence
        # units on (localised scoring, opt-in): the differences are what each costs.
        whole = ClassifierCheck("classifier", ClassifierOptions(
            providers=providers, max_batch=top, canonical=False, content=False, units=False),
            model_dir, fast_dir)
        units = ClassifierCheck("classifier", ClassifierOptions(
            providers=providers, max_batch=top, units=True), model_dir, fast_dir)
        for kind, texts in (("benign", _sentence_prompts(clf.tokenizer, BENIGN_SENTENCES, 64,
                                                         TOKENS)),
                            ("attack", _sentence_prompts(clf.tokenizer, _attack_sentences(), 64,
                                                         TOKENS))):
            assert all(len(w) == TOKENS for p in texts for w in clf.windows(p)), "prompt length"
            cases += [(f"check + prefilter, {kind} prompts", 1, _cycle(cascaded, texts), iters),
                      (f"check + prefilter, whole text only, {kind} prompts", 1,
                       _cycle(whole, texts), iters),
                      (f"check + prefilter, sentence units, {kind} prompts", 1,
                       _cycle(units, texts), iters),
                      (f"check_batch + prefilter, {kind} prompts", BATCH,
                       _batch_of(cascaded, texts[:BATCH]), b_iters)]
    precision = "fp16" if fp16 and on_gpu else "fp32"
    rows = []
    for name, batch, fn, n in cases:
        counted = (whole if "whole text only" in name
                   else units if "sentence units" in name else cascaded)
        before = _cascade_counts(counted)
        s = summarize(time_calls(fn, iters=n, warmup=5 if batch == 1 else 1, max_seconds=max_s))
        after = _cascade_counts(counted)
        row = {
            "case": name,
            "precision": precision,
            "batch": batch,
            "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"],
            "p50_ms_per_prompt": s["p50_ms"] / batch,
            "prompts_per_s": batch * 1000.0 / s["p50_ms"],
            "n": s["n"],
        }
        if "prefilter" in name:
            cleared, total = after[0] - before[0], sum(after) - sum(before)
            row["prefilter_cleared"] = cleared / total if total else None
        rows.append(row)
    chk.close()
    for c in (cascaded, whole, units):
        if c is not None:
            c.close()
    return rows, tuple(clf.active_providers)


def _cycle(chk: Any, texts: list[str]) -> Callable[[], None]:
    """One ``check`` per call, cycling through ``texts``."""
    from infershield.checks.base import CheckContext

    i = [0]

    def one() -> None:
        chk.check(CheckContext(text=texts[i[0] % len(texts)]))
        i[0] += 1

    return one


def _batch_of(chk: Any, texts: list[str]) -> Callable[[], None]:
    from infershield.checks.base import CheckContext

    ctxs = [CheckContext(text=t) for t in texts]
    return lambda: chk.check_batch(ctxs)


def _cascade_counts(chk: Any) -> tuple[int, int]:
    """(cleared, escalated) so far by the check's prefilter cascade; zeros without one."""
    cascade = getattr(chk, "cascade", None)
    return (cascade.cleared, cascade.escalated) if cascade is not None else (0, 0)


def run(*, quick: bool = False, gpu: bool = False, out_dir: Path | None = None) -> dict[str, Any]:
    """CPU: float32, batch 32. ``gpu``: the CUDA EP in float32 and float16, batches 32-256."""
    iters = 30 if quick else 200
    max_s = 5.0 if quick else 20.0
    threads = min(os.cpu_count() or 1, 4)
    precisions = (False, True) if gpu else (False,)
    batches = (BATCH, 128, 256) if gpu else (BATCH,)
    model_dir, build_s = shipped_model_dir(fp16=gpu)
    fast_dir = None if gpu else prefilter_dir()  # on a GPU the main model runs alone
    rows: list[dict[str, Any]] = []
    providers: tuple[str, ...] = ()
    for fp16 in precisions:
        r, providers = _cases(model_dir, gpu=gpu, fp16=fp16, batches=batches, iters=iters,
                              max_s=max_s, threads=threads, fast_dir=fast_dir)
        rows += r

    def pick(case: str, batch: int, precision: str = "fp32") -> dict[str, Any]:
        return next(r for r in rows if r["case"] == case and r["batch"] == batch
                    and r["precision"] == precision)

    best = max((r for r in rows if r["case"] == "check_batch"), key=lambda r: r["prompts_per_s"])
    fast = "fp16" if gpu else "fp32"
    headline = {
        "device": "GPU (CUDA EP)" if "CUDAExecutionProvider" in providers else "CPU",
        "providers": list(providers),
        "intra_op_threads": threads,
        "p50_ms_256_tokens": pick("check (batcher)", 1, fast)["p50_ms"],
        "plain_ort_p50_ms_batch1_256tok": pick("plain onnxruntime", 1, fast)["p50_ms"],
        "prompts_per_s": best["prompts_per_s"],
        "prompts_per_s_batch": best["batch"],
        "prompts_per_s_precision": best["precision"],
        "plain_ort_prompts_per_s_batch32": pick("plain onnxruntime", BATCH, fast)["prompts_per_s"],
        "model_build_s": round(build_s, 2),
    }
    for kind in ("benign", "attack"):
        row = next((r for r in rows if r["case"] == f"check + prefilter, {kind} prompts"), None)
        if row is not None:
            headline[f"prefilter_p50_ms_256_tokens_{kind}"] = row["p50_ms"]
            headline[f"prefilter_cleared_{kind}"] = row["prefilter_cleared"]
    return suite_result(
        SUITE,
        baseline="plain onnxruntime, same model and threads, pre-tokenised input",
        rows=rows,
        headline=headline,
        notes=[f"{TOKENS}-token prompts; model {model_dir.name}; {threads} intra-op threads"
               + ("; fp16 = model_fp16.onnx (float16 encoder) on the CUDA EP" if gpu else "")],
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
