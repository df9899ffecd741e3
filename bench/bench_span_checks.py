"""Secrets and PII screening: recall and false positives per type on our own battery, and
the output stage's cost, against a baseline commit in the same run.

The battery is ``tests/data/span_battery.jsonl`` (written by ``bench/data/make_span_battery``):
per type, valid examples (``pos``: the value must disappear from the text) and near misses
(``neg``: the text must come back unchanged). The output stage is the default policy's
``secrets`` then ``pii`` check, timed per call on 4 KB everyday prompts (``make_prompts``)
and on a 4 KB text dense with findings.

``--baseline REF`` exports REF's ``python/`` tree to a temporary directory (with this venv's
native module, so REF must share the native core) and runs the same measurement there in a
subprocess that does not see the editable install; runs alternate current/baseline and the
best p50 of each is kept, which damps a shared machine's noise. Prints a table and writes
JSON; never asserts a timing.

Run: ``python -m bench.bench_span_checks [--baseline REF] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BATTERY = ROOT / "tests" / "data" / "span_battery.jsonl"


def _worker(rounds: int) -> dict[str, Any]:
    """Measure the importable ``infershield`` (current tree or a baseline)."""
    from bench.common import make_prompts, summarize, time_calls
    from infershield.checks.base import CheckContext
    from infershield.checks.output.pii import PiiCheck
    from infershield.checks.output.secrets import SecretsCheck
    from infershield.pipeline import Pipeline, Step

    pipe = Pipeline(
        [Step(SecretsCheck("secrets"), "block"), Step(PiiCheck("pii"), "block")], fail_fast=False
    )
    rows = [json.loads(x) for x in BATTERY.read_text(encoding="utf-8").splitlines()]
    per: dict[str, dict[str, int]] = defaultdict(lambda: {"tp": 0, "pos": 0, "fp": 0, "neg": 0})
    for r in rows:
        out = pipe.run(CheckContext(text=r["text"], stage="output")).text
        c = per[r["kind"]]
        if r["label"] == "pos":
            c["pos"] += 1
            c["tp"] += r["value"] not in out
        else:
            c["neg"] += 1
            c["fp"] += out != r["text"]
    everyday = make_prompts(4096, 64)
    dense_src = "\n".join(r["text"] for r in rows if r["label"] == "pos")
    dense = [dense_src[i : i + 4096] for i in range(0, len(dense_src) - 4096, 1024)][:8]
    timing: dict[str, Any] = {}
    for name, texts in (("everyday_4k", everyday), ("dense_4k", dense)):
        idx = [0]

        def one(texts: list[str] = texts, idx: list[int] = idx) -> None:
            t = texts[idx[0] % len(texts)]
            idx[0] += 1
            pipe.run(CheckContext(text=t, stage="output"))

        best: dict[str, float] | None = None
        for _ in range(rounds):
            s = summarize(time_calls(one, iters=300, warmup=20, max_seconds=4.0))
            if best is None or s["p50_ms"] < best["p50_ms"]:
                best = s
        timing[name] = best
    return {"per_kind": dict(per), "timing": timing}


def _export(ref: str, dest: Path) -> Path:
    """REF's python/ tree under ``dest`` with this venv's native module copied in."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "python"], check=True, capture_output=True
    ).stdout
    tar_path = dest / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tf:
        tf.extractall(dest, filter="data")
    import importlib.util

    spec = importlib.util.find_spec("infershield._native")
    if spec is None or spec.origin is None:
        raise SystemExit("the native module is not built (make install)")
    so = Path(spec.origin)
    shutil.copy2(so, dest / "python" / "infershield" / so.name)
    return dest / "python"


def _run_worker(python_dir: Path | None, rounds: int) -> dict[str, Any]:
    if python_dir is None:
        cmd = [sys.executable, "-m", "bench.bench_span_checks", "--worker", str(rounds)]
    else:
        # -S: no .pth files, so the editable install cannot shadow the baseline tree.
        paths = [str(python_dir), str(ROOT), sysconfig.get_paths()["purelib"]]
        boot = (f"import sys; sys.path[:0] = {paths!r}; sys.argv = ['x', '--worker', "
                f"'{rounds}']; import runpy; runpy.run_module('bench.bench_span_checks', "
                "run_name='__main__')")
        cmd = [sys.executable, "-S", "-c", boot]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({'baseline' if python_dir else 'current'}):\n"
                         f"{proc.stderr[-2000:]}")
    out = proc.stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _totals(per: dict[str, dict[str, int]]) -> dict[str, int]:
    t = {"tp": 0, "pos": 0, "fp": 0, "neg": 0}
    for c in per.values():
        for k in t:
            t[k] += c[k]
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="git ref to compare against (same native core)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(_worker(args.worker)))
        return 0
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = _export(args.baseline, Path(tmp)) if args.baseline else None
        for _ in range(args.rounds):
            for label, d in (("current", None), ("baseline", base_dir)):
                if label == "baseline" and d is None:
                    continue
                r = _run_worker(d, 1)
                prev = results.get(label)
                if prev is None:
                    results[label] = r
                else:
                    for name, s in r["timing"].items():
                        if s["p50_ms"] < prev["timing"][name]["p50_ms"]:
                            prev["timing"][name] = s
    cur = results["current"]
    base = results.get("baseline")
    print("| type | positives | recall | near misses | flagged | recall (baseline) | "
          "flagged (baseline) |")
    print("|---|---|---|---|---|---|---|")
    for kind in sorted(cur["per_kind"]):
        c = cur["per_kind"][kind]
        b = (base or {}).get("per_kind", {}).get(kind)
        print(f"| {kind} | {c['pos']} | {c['tp'] / max(c['pos'], 1):.2f} | {c['neg']} | "
              f"{c['fp']} | " + (f"{b['tp'] / max(b['pos'], 1):.2f} | {b['fp']} |" if b
                                  else "n/a | n/a |"))
    for label, r in results.items():
        t = _totals(r["per_kind"])
        print(f"{label}: recall {t['tp']}/{t['pos']} = {t['tp'] / t['pos']:.3f}; near misses "
              f"flagged {t['fp']}/{t['neg']} = {t['fp'] / t['neg']:.3f}")
    for name in cur["timing"]:
        line = f"{name}: current p50 {cur['timing'][name]['p50_ms']:.4f} ms"
        if base is not None:
            bp = base["timing"][name]["p50_ms"]
            line += (f", baseline {bp:.4f} ms, ratio "
                     f"{cur['timing'][name]['p50_ms'] / bp:.2f}x")
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"baseline_ref": args.baseline, **results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
