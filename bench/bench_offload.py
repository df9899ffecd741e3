"""Classifier offload: the classifier check with its model in-process vs on Triton.

``python -m bench.bench_offload [--quick] [--json]``. The shipped model is exported with
``infershield models export-triton`` and served by a pytriton stand-in in a separate process
(onnxruntime behind pytriton's Python backend: the bundled tritonserver has no ONNX Runtime
backend). The same :class:`ClassifierCheck` runs with ``backend: local`` and ``backend:
triton`` on the same 256-token prompts, one at a time (batch 1), alternating, so both see the
same machine load. Latency is the check's ``check()`` call: tokenising, the forward pass (or
the gRPC round trip to Triton) and the threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, make_prompts, ratio, suite_result, summarize

SUITE = "offload"
TOKENS = 256  # per prompt, special tokens included: one window of the shipped model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def standin(entry: Path) -> Iterator[str]:
    """The stand-in Triton serving ``entry`` in its own process; yields ``host:port``."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.offload_standin", str(entry),
                             str(port)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + 120
            while True:
                try:
                    if stub.ModelReady(pb.ModelReadyRequest(name=entry.name), timeout=2).ready:
                        break
                except grpc.RpcError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Triton stand-in did not start")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def prompts(tokenizer: Any, count: int) -> list[str]:
    """``count`` texts of exactly ``TOKENS`` tokens (specials included) each."""
    out = []
    for text in make_prompts(4096, count, seed=11):
        ids = tokenizer.encode(text, add_special_tokens=False).ids[: TOKENS - 2]
        cut = tokenizer.decode(ids)
        if len(tokenizer.encode(cut, add_special_tokens=True).ids) == TOKENS:
            out.append(cut)
    return out


def run(*, quick: bool = False, **_: Any) -> dict[str, Any]:
    try:
        import pytriton  # noqa: F401
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"needs pytriton: {exc}")
    from infershield.checks.base import CheckContext
    from infershield.checks.input.classifier import (
        ClassifierCheck,
        ClassifierOptions,
        ClassifierTritonOptions,
    )
    from infershield.config import Config
    from infershield.detectors.models import SHIPPED_MODEL, ensure_shipped_model
    from infershield.detectors.triton_repo import export_triton

    iters = 60 if quick else 400
    cfg = Config()
    model_dir = ensure_shipped_model(cfg.cache_path)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-offload-") as tmp:
        entry = export_triton(model_dir, Path(tmp), name=SHIPPED_MODEL, max_batch=32)
        with standin(entry) as url:
            # canonical off: the prompts are plain text, so each check is one forward pass.
            base = ClassifierOptions(prefilter="none", canonical=False)
            checks = {
                "local": ClassifierCheck.from_config("classifier", base, cfg),
                "triton": ClassifierCheck.from_config("classifier", ClassifierOptions(
                    prefilter="none", canonical=False, backend="triton",
                    triton=ClassifierTritonOptions(url=url, model=SHIPPED_MODEL)), cfg),
            }
            texts = prompts(checks["local"].model.tokenizer, 64)
            samples: dict[str, list[float]] = {k: [] for k in checks}
            scores: dict[str, list[float]] = {k: [] for k in checks}
            for i in range(iters + 5):
                ctx = CheckContext(text=texts[i % len(texts)])
                for name, chk in checks.items():
                    t0 = time.perf_counter()
                    v = chk.check(ctx)
                    dt = (time.perf_counter() - t0) * 1000.0
                    if i >= 5:  # warm-up
                        samples[name].append(dt)
                        scores[name].append(v.score)
            for chk in checks.values():
                chk.close()
    load = os.getloadavg()
    worst = max(abs(a - b) for a, b in zip(scores["local"], scores["triton"], strict=True))
    stats = {k: summarize(v) for k, v in samples.items()}
    for name in checks:
        rows.append({"classifier": name, "tokens": TOKENS, "batch": 1, "n": len(samples[name]),
                     "p50_ms": round(stats[name]["p50_ms"], 3),
                     "p99_ms": round(stats[name]["p99_ms"], 3),
                     "p50_vs_local": ratio(stats[name]["p50_ms"], stats["local"]["p50_ms"]),
                     "p99_vs_local": ratio(stats[name]["p99_ms"], stats["local"]["p99_ms"])})
    return suite_result(
        SUITE,
        baseline="the same check with backend: local, alternating calls, same run",
        rows=rows,
        headline={"triton_p50_vs_local": rows[1]["p50_vs_local"],
                  "triton_p99_vs_local": rows[1]["p99_vs_local"],
                  "max_score_diff": worst},
        notes=[f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
               "client, stand-in Triton and local onnxruntime share this machine's CPUs",
               f"largest |local - triton| score over the run: {worst:.2e}"],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    res = run(quick=args.quick)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        for row in res["rows"]:
            print(row)
        for note in res["notes"]:
            print("#", note)
    return 0 if res["status"] != "error" else 1


if __name__ == "__main__":
    raise SystemExit(main())
