"""Detector sweeps: batch size (1-256) and sequence length (64-512), CPU EP vs CUDA EP, and
concurrent callers with and without dynamic micro-batching.

The model is the shipped classifier (built into a cache on first use, as ``make serve`` does).
Each cell times :meth:`SequenceClassifier.forward` on pre-tokenised windows, so it is the
model's cost plus our padding, without tokenisation. The micro-batching cell has 32 threads,
each scoring 256-token prompts one at a time, first calling the classifier directly (one ONNX
run per prompt, no batching) and then through :class:`MicroBatcher` (concurrent requests
coalesced into one run): the baseline is the unbatched mode, in the same run.

On a CPU run only the CPU EP is swept (batches up to 64, since a 256-prompt batch takes over a
minute on 2 cores); ``--gpu`` sweeps the CUDA EP over 1-256 and, in the same run, the CPU EP
as its baseline.

Run alone: ``python -m bench.bench_detector_sweep [--quick] [--gpu] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS_DIR,
    finish,
    line_plot,
    make_prompts,
    ratio,
    suite_result,
    summarize,
    time_calls,
)

SUITE = "detector_sweep"
BATCHES: tuple[int, ...] = (1, 4, 16, 64, 256)
SEQ_LENS: tuple[int, ...] = (64, 128, 256, 512)
SEQ_BATCHES: tuple[int, ...] = (1, 32)
#: On the CPU EP a 256-prompt batch of 256 tokens takes over a minute on 2 cores: the CPU
#: sweep stops at 64 and its sequence sweep uses batch 8.
CPU_MAX_BATCH = 64
CPU_SEQ_BATCHES: tuple[int, ...] = (1, 8)
CALLERS = 32


def _windows_of(clf: Any, length: int, count: int) -> list[list[int]]:
    """``count`` distinct token windows of exactly ``length`` tokens (specials kept)."""
    texts = make_prompts(8 * length, count, attack_rate=0.2, seed=5)
    out = []
    for t in texts:
        w = clf.windows(t)[0]
        if len(w) < length:
            raise RuntimeError(f"prompt too short for {length} tokens")
        out.append(w[: length - 1] + w[-1:])  # keep [CLS] first and [SEP] last
    return out


def _cell(
    clf: Any, provider: str, batch: int, length: int, *, iters: int, max_seconds: float
) -> dict[str, Any]:
    """p50/p99 of one forward pass over ``batch`` windows of ``length`` tokens."""
    wins = _windows_of(clf, length, min(batch, 64))
    feed = [wins[i % len(wins)] for i in range(batch)]
    s = summarize(
        time_calls(lambda: clf.forward(feed), iters=iters, warmup=2, max_seconds=max_seconds)
    )
    return {
        "sweep": "",
        "provider": provider,
        "batch": batch,
        "tokens": length,
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "p50_ms_per_prompt": round(s["p50_ms"] / batch, 4),
        "prompts_per_s": round(batch * 1000.0 / s["p50_ms"], 1) if s["p50_ms"] else None,
        "n": s["n"],
    }


def _concurrent(
    clf: Any, provider: str, *, per_caller: int, batched: bool, max_batch: int,
    max_wait_ms: float = 0.0,
) -> dict[str, Any]:
    """32 threads, each scoring ``per_caller`` prompts one at a time."""
    from infershield.detectors.runtime import MicroBatcher

    prompts = make_prompts(1400, 64, seed=9)  # about 256 tokens each
    batcher = (
        MicroBatcher(clf, max_batch=max_batch, max_wait_ms=max_wait_ms) if batched else None
    )
    lat: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CALLERS)

    def caller(k: int) -> None:
        mine: list[float] = []
        barrier.wait()
        for j in range(per_caller):
            text = prompts[(k * per_caller + j) % len(prompts)]
            t0 = time.perf_counter()
            if batcher is not None:
                batcher.submit(text).result(timeout=120)
            else:
                clf.score([text])
            mine.append((time.perf_counter() - t0) * 1000.0)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(CALLERS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - t0
    if batcher is not None:
        batcher.close()
    s = summarize(lat)
    return {
        "sweep": "concurrency",
        "provider": provider,
        "mode": (
            f"micro-batched (max {max_batch}, "
            + (f"wait {max_wait_ms:g} ms)" if max_wait_ms else "greedy)")
            if batched
            else "direct (no batching)"
        ),
        "callers": CALLERS,
        "requests": len(lat),
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "prompts_per_s": round(len(lat) / wall, 1) if wall else None,
    }


def run(*, quick: bool = False, gpu: bool = False, out_dir: Path | None = None) -> dict[str, Any]:
    """Batch and sequence-length sweeps per provider, plus the micro-batching comparison."""
    try:
        from bench.bench_detector import shipped_model_dir
        from infershield.detectors.runtime import RuntimeOptions, SequenceClassifier
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"detector runtime missing: {exc}")
    try:
        model_dir, build_s = shipped_model_dir(fp16=gpu)
    except Exception as exc:
        return suite_result(SUITE, status="skipped", reason=f"shipped model not buildable: {exc}")
    notes = [f"model: {model_dir} (ready in {build_s:.1f} s)"]
    # (provider, float16): on a GPU, the CUDA EP in both precisions, then the CPU baseline.
    providers = [("cuda", False), ("cuda", True), ("cpu", False)] if gpu else [("cpu", False)]
    batches = (1, 16) if quick else BATCHES
    seqs = (64, 256) if quick else SEQ_LENS
    iters = 5 if quick else 50
    max_seconds = 1.5 if quick else 6.0
    per_caller = 1 if quick else 2

    rows: list[dict[str, Any]] = []
    for prov, fp16 in providers:
        clf = SequenceClassifier(
            model_dir, RuntimeOptions(providers=(prov,), window=512, fp16=fp16)
        )
        active = clf.active_providers[0]
        if prov == "cuda" and active != "CUDAExecutionProvider":
            notes.append(f"CUDA EP requested but onnxruntime ran {active}; no CUDA numbers")
            continue
        label = ("CUDA EP fp16" if fp16 else "CUDA EP") if prov == "cuda" else "CPU EP"
        cpu = prov == "cpu"
        p_batches = tuple(b for b in batches if b <= CPU_MAX_BATCH) if cpu else batches
        seq_batches = CPU_SEQ_BATCHES if cpu else SEQ_BATCHES
        for b in p_batches:
            row = _cell(clf, label, b, 256, iters=iters, max_seconds=max_seconds)
            row["sweep"] = "batch"
            rows.append(row)
        for length in seqs:
            if length > clf.window:
                notes.append(f"{length} tokens exceeds the model window {clf.window}; skipped")
                continue
            for b in seq_batches:
                row = _cell(clf, label, b, length, iters=iters, max_seconds=max_seconds)
                row["sweep"] = "seq_len"
                rows.append(row)
        # Direct calls, then the batcher waiting 2 ms for company, then greedy (the default).
        for batched, wait in ((False, 0.0), (True, 2.0), (True, 0.0)):
            rows.append(_concurrent(clf, label, per_caller=per_caller * (1 if cpu else 4),
                                    batched=batched, max_batch=32, max_wait_ms=wait))
        clf_threads = getattr(clf.options, "intra_op_threads", 0) or min(os.cpu_count() or 1, 4)
        notes.append(f"{label}: intra-op threads {clf_threads}")

    headline: dict[str, Any] = {}
    for prov in ("CUDA EP", "CUDA EP fp16", "CPU EP"):
        tag = {"CUDA EP": "cuda", "CUDA EP fp16": "cuda_fp16", "CPU EP": "cpu"}[prov]
        b = [r for r in rows if r["provider"] == prov and r["sweep"] == "batch"]
        if b:
            best = max(b, key=lambda r: r["prompts_per_s"] or 0)
            headline[f"{tag}_best_prompts_per_s_256tok"] = best["prompts_per_s"]
            headline[f"{tag}_best_batch"] = best["batch"]
        c = {
            r["mode"].split(" ")[0]: r
            for r in rows
            if r["provider"] == prov and r["sweep"] == "concurrency"
        }
        if "direct" in c and "micro-batched" in c:
            headline[f"{tag}_microbatch_throughput_gain"] = ratio(
                c["micro-batched"]["prompts_per_s"], c["direct"]["prompts_per_s"]
            )
    plots: list[str] = []
    if out_dir is not None:
        plots = _plots(rows, out_dir)
    return suite_result(
        SUITE,
        status="ok" if rows else "skipped",
        reason="" if rows else "no provider could run",
        baseline="direct (unbatched) concurrent calls; on --gpu also the CPU EP",
        rows=rows,
        headline=headline,
        notes=notes,
        plots=plots,
    )


def _plots(rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    out: list[str] = []
    provs = list(dict.fromkeys(r["provider"] for r in rows))
    batch_rows = [r for r in rows if r["sweep"] == "batch"]
    if batch_rows:
        xs = sorted({r["batch"] for r in batch_rows})
        series = {
            p: [
                next(
                    (
                        r["prompts_per_s"]
                        for r in batch_rows
                        if r["provider"] == p and r["batch"] == x
                    ),
                    None,
                )
                for x in xs
            ]
            for p in provs
        }
        path = line_plot(
            out_dir / "detector_batch_sweep.png",
            title="Detector throughput by batch size (256 tokens)",
            x=xs,
            series=series,
            xlabel="batch size",
            ylabel="prompts/s",
            log_x=True,
            log_y=True,
        )
        if path:
            out.append(path.name)
    seq_rows = [r for r in rows if r["sweep"] == "seq_len"]
    if seq_rows:
        xs = sorted({r["tokens"] for r in seq_rows})
        series = {
            f"{p}, batch {b}": [
                next(
                    (
                        r["p50_ms"]
                        for r in seq_rows
                        if r["provider"] == p and r["batch"] == b and r["tokens"] == x
                    ),
                    None,
                )
                for x in xs
            ]
            for p in provs
            for b in sorted({r["batch"] for r in seq_rows if r["provider"] == p})
        }
        path = line_plot(
            out_dir / "detector_seq_sweep.png",
            title="Detector p50 by sequence length",
            x=xs,
            series=series,
            xlabel="tokens",
            ylabel="p50 ms (log)",
            log_x=True,
            log_y=True,
        )
        if path:
            out.append(path.name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--gpu", action="store_true", help="sweep the CUDA EP too")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "detector_sweep.json"
    res = run(quick=args.quick, gpu=args.gpu, out_dir=out.parent)
    return finish(res, out, gpu=args.gpu)


if __name__ == "__main__":
    sys.exit(main())
