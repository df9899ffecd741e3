"""Shared helpers for the benches: machine info, timing, percentiles, corpora, JSON, plots.

Every suite returns a :class:`SuiteResult`-shaped ``dict`` (see :func:`suite_result`) so that
``bench.run`` can write one JSON file and one Markdown report for the whole run. Nothing here
asserts a timing: benches measure and report.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"

#: Prompt sizes (bytes) every size-swept suite uses unless told otherwise.
PROMPT_SIZES: tuple[int, ...] = (200, 4 * 1024, 64 * 1024)
QUICK_PROMPT_SIZES: tuple[int, ...] = (200, 4 * 1024)

#: Distributions whose versions matter for the numbers (looked up, never imported).
LIBRARIES: tuple[str, ...] = (
    "infershield",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "grpcio",
    "tritonclient",
    "nvidia-pytriton",
    "matplotlib",
)


# ------------------------------------------------------------------------------ environment


def _run(cmd: Sequence[str], timeout: float = 10.0) -> str:
    """Output of ``cmd`` (stripped), or ``""`` when it is missing or fails."""
    try:
        out = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def git_commit() -> dict[str, Any]:
    """HEAD's hash, short hash and whether the working tree has uncommitted changes."""
    sha = _run(["git", "rev-parse", "HEAD"])
    dirty = bool(_run(["git", "status", "--porcelain", "--untracked-files=no"]))
    return {"sha": sha or "unknown", "short": sha[:10] if sha else "unknown", "dirty": dirty}


def cpu_info() -> dict[str, Any]:
    """CPU model and counts from ``lscpu`` (falls back to /proc/cpuinfo and ``os``)."""
    model = ""
    for line in _run(["lscpu"]).splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            model = value.strip()
            break
    if not model:
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "model": model or platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "machine": platform.machine(),
    }


def memory_total_mib() -> int | None:
    """Physical memory in MiB (Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_info() -> list[dict[str, str]]:
    """One entry per GPU that ``nvidia-smi`` lists; empty when there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = _run(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total,compute_cap",
            "--format=csv,noheader",
        ]
    )
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            gpus.append(
                {
                    "name": parts[0],
                    "driver": parts[1],
                    "memory": parts[2],
                    "compute_capability": parts[3] if len(parts) > 3 else "",
                }
            )
    return gpus


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (absent distributions are left out)."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    hs = hyperscan_version()
    if hs:
        out["hyperscan"] = hs
    return out


def hyperscan_version() -> str:
    """The Hyperscan version the native module reports, else the Debian package's, else ''."""
    try:
        from infershield import native  # type: ignore[attr-defined]

        for attr in ("hyperscan_version", "HYPERSCAN_VERSION", "hs_version"):
            value = getattr(native, attr, None)
            if callable(value):
                value = value()
            if value:
                return str(value)
    except Exception:  # the native module may not be built: fall through
        pass
    return _run(["dpkg-query", "-W", "-f=${Version}", "libhyperscan5"]) or _run(
        ["pkg-config", "--modversion", "libhs"]
    )


def onnx_providers() -> list[str]:
    """onnxruntime's available execution providers (empty if onnxruntime is missing)."""
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except Exception:
        return []


def cuda_available() -> tuple[bool, str]:
    """Whether the CUDA execution provider can run here, and why not when it cannot."""
    providers = onnx_providers()
    if "CUDAExecutionProvider" not in providers:
        return False, (
            "onnxruntime has no CUDAExecutionProvider (installed providers: "
            f"{', '.join(providers) or 'none'}); install onnxruntime-gpu on a CUDA machine"
        )
    if not gpu_info():
        return False, "CUDAExecutionProvider is installed but nvidia-smi lists no GPU"
    return True, ""


def environment(*, gpu: bool = False) -> dict[str, Any]:
    """Everything needed to tell where and when a number came from."""
    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "memory_mib": memory_total_mib(),
        "gpus": gpu_info(),
        "onnx_providers": onnx_providers(),
        "libraries": library_versions(),
        "gpu_run": gpu,
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return env


def machine_label(env: dict[str, Any]) -> str:
    """Short human label: 'AMD EPYC, 2 CPUs' or 'NVIDIA H100 80GB HBM3 + AMD EPYC'."""
    cpu = env["cpu"]
    label = f"{cpu['model']}, {cpu.get('usable_cpus') or cpu.get('logical_cpus')} CPUs"
    if env.get("gpu_run") and env.get("gpus"):
        label = f"{env['gpus'][0]['name']} + {label}"
    return label


# ------------------------------------------------------------------------------ statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no samples."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min/max (ms) and the sample count."""
    n = len(samples_ms)
    return {
        "n": n,
        "p50_ms": round(percentile(samples_ms, 50), 6),
        "p90_ms": round(percentile(samples_ms, 90), 6),
        "p99_ms": round(percentile(samples_ms, 99), 6),
        "mean_ms": round(sum(samples_ms) / n, 6) if n else math.nan,
        "min_ms": round(min(samples_ms), 6) if n else math.nan,
        "max_ms": round(max(samples_ms), 6) if n else math.nan,
    }


def time_calls(
    fn: Callable[[], object],
    *,
    iters: int,
    warmup: int = 3,
    max_seconds: float = 10.0,
) -> list[float]:
    """Latencies (ms) of up to ``iters`` calls of ``fn``, stopping after ``max_seconds``.

    Warm-up stops early once it has used half of ``max_seconds``. At least one measured call
    is always made, so a very slow function still reports.
    """
    started = time.perf_counter()
    for _ in range(warmup):
        fn()
        if time.perf_counter() - started > max_seconds / 2:  # a slow call: warm up less
            break
    samples: list[float] = []
    deadline = time.perf_counter() + max_seconds
    for _ in range(max(1, iters)):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
        if t0 > deadline:
            break
    return samples


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` rounded, or None when it is undefined."""
    if not denominator or math.isnan(denominator) or math.isnan(numerator):
        return None
    return round(numerator / denominator, 3)


# ------------------------------------------------------------------------------ corpora


@dataclass(frozen=True)
class Seed:
    """A hand-written prompt fragment from ``bench/data/seed_prompts.jsonl``."""

    text: str
    label: str  # benign | attack


def load_seeds(path: Path | None = None) -> list[Seed]:
    """The hand-written fragments that generated prompts are built from."""
    path = path or DATA_DIR / "seed_prompts.jsonl"
    seeds = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            seeds.append(Seed(rec["text"], rec["label"]))
    return seeds


def make_prompts(size: int, count: int, *, attack_rate: float = 0.2, seed: int = 7) -> list[str]:
    """``count`` prompts of about ``size`` UTF-8 bytes, built from the seed fragments.

    Mostly benign text; a fraction ``attack_rate`` of prompts has one attack fragment placed
    at a random position, so detectors see realistic positives without every prompt matching.
    Deterministic for a given ``seed``.
    """
    seeds = load_seeds()
    benign = [s.text for s in seeds if s.label == "benign"]
    attacks = [s.text for s in seeds if s.label == "attack"]
    rng = random.Random(seed * 1_000_003 + size)
    prompts = []
    for _ in range(count):
        parts: list[str] = []
        n = 0
        while n < size:
            frag = rng.choice(benign)
            parts.append(frag)
            n += len(frag.encode("utf-8")) + 1
        if rng.random() < attack_rate:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(attacks))
        text = " ".join(parts).encode("utf-8")[:size].decode("utf-8", errors="ignore")
        prompts.append(text)
    return prompts


def size_label(size: int) -> str:
    """200 -> '200 B', 4096 -> '4 KB', 65536 -> '64 KB'."""
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KB"
    return f"{size} B"


# ------------------------------------------------------------------------------ results


def finish(res: dict[str, Any], out: Path, *, gpu: bool = False) -> int:
    """The end of every bench script's ``main``: stamp the result with the environment,
    write it to ``out``, print its table, notes and headline; the exit code (1 on error)."""
    res["environment"] = environment(gpu=gpu)
    write_json(out, res)
    if res["status"] != "ok":
        print(f"{res['suite']}: {res['status']}: {res['reason']}")
    print(markdown_table(res["rows"]))
    for n in res["notes"]:
        print("note:", n)
    if res["headline"]:
        print(json.dumps(res["headline"]))
    print(f"wrote {out}")
    return 0 if res["status"] != "error" else 1


def suite_result(
    suite: str,
    *,
    status: str = "ok",
    reason: str = "",
    baseline: str = "",
    rows: list[dict[str, Any]] | None = None,
    headline: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    plots: list[str] | None = None,
    raw: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The shape every suite returns.

    ``status`` is ``ok``, ``skipped`` (could not run here; ``reason`` says why) or ``error``.
    ``rows`` are flat dicts that become the suite's Markdown table; ``headline`` holds the few
    numbers that go into ``bench/RESULTS.md``; ``raw`` keeps a suite's own JSON untouched.
    """
    return {
        "suite": suite,
        "status": status,
        "reason": reason,
        "baseline": baseline,
        "rows": rows or [],
        "headline": headline or {},
        "notes": notes or [],
        "plots": plots or [],
        "raw": raw or {},
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (NaN/inf become null); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
    return path


def fmt(value: Any, digits: int = 3) -> str:
    """Compact Markdown cell text for a number, None or anything else."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.2e}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return (
            f"{value:.{digits}g}"
            if abs(value) < 1
            else f"{value:.{digits}f}".rstrip("0").rstrip(".")
        )
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (columns default to the union of keys, in order)."""
    if not rows:
        return "_no rows_\n"
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(k, None)
        columns = list(seen)
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ plots


def plotting_available() -> bool:
    """Whether matplotlib can be imported (it is in the ``bench`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> Path:
    """Add the legend, write the figure to ``path`` and free it."""
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "plot"


def bar_plot(
    path: Path,
    *,
    title: str,
    groups: Sequence[str],
    series: dict[str, Sequence[float | None]],
    ylabel: str,
    log_y: bool = False,
) -> Path | None:
    """Grouped bar chart: one group per ``groups`` entry, one bar per series. None if no
    matplotlib."""
    if not plotting_available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(1, len(series))), 4.2))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ys = [v if v is not None and not math.isnan(v) else 0.0 for v in values]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 5 else 0, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_y:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, ax, path)


def line_plot(
    path: Path,
    *,
    title: str,
    x: Sequence[float],
    series: dict[str, Sequence[float | None]],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    log_y: bool = False,
) -> Path | None:
    """Line chart of several series over one x axis. None if no matplotlib."""
    if not plotting_available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, values in series.items():
        pts = [(a, b) for a, b in zip(x, values, strict=False) if b is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log_x:
        ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return _save(plt, fig, ax, path)


def python_executable() -> str:
    """The interpreter running the bench (used to start suite scripts as subprocesses)."""
    return sys.executable
