"""One entry point for every bench: ``python -m bench.run [--gpu] [--suites ...] [--quick]``.

It runs the selected suites (each against its own baseline, in the same run), then writes into
``bench/results/<UTC date>-<commit>/``:

* ``results.json``: the environment (commit, host, CPU/GPU model, library versions, date) and
  every suite's rows, headline numbers and notes;
* ``report.md``: the same as Markdown, with the PNG plots next to it;

points ``bench/results/latest`` at that folder, and (on a full run, not ``--quick``) rewrites the
headline table at the top of ``bench/RESULTS.md``, keeping the other column (CPU or GPU) from the
last run that produced it.

A suite is a module ``bench/bench_<name>.py``. If it has ``run(**kwargs)`` returning a dict, that
is called in-process with whichever of ``quick``, ``gpu`` and ``out_dir`` it accepts; otherwise
the script is started as a subprocess with the flags its ``--help`` lists (``--quick``,
``--gpu``, ``--json``/``--out``) and its JSON is read back. A suite that fails is reported as
an error and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_DIR,
    REPO_ROOT,
    RESULTS_DIR,
    bar_plot,
    cuda_available,
    environment,
    fmt,
    machine_label,
    markdown_table,
    slug,
    suite_result,
    write_json,
)

#: Suite name -> module, in the order they run. The e2e and peers suites are the slowest.
SUITES: dict[str, str] = {
    "matcher": "bench.bench_matcher",
    "checks": "bench.bench_checks",
    "detector": "bench.bench_detector",
    "detector_sweep": "bench.bench_detector_sweep",
    "offload": "bench.bench_offload",
    "e2e": "bench.bench_e2e",
    "burst": "bench.bench_burst",
    "tracing": "bench.bench_tracing",
    "peers": "bench.bench_peers",
    "stream": "bench.bench_stream",
}
#: What ``--gpu`` runs by default: the suites whose numbers depend on the CUDA EP.
GPU_SUITES: tuple[str, ...] = ("detector", "detector_sweep", "e2e")
RESULTS_MD = BENCH_DIR / "RESULTS.md"
HEADLINE_START = (
    "<!-- headline:start (written by `python -m bench.run`; edit the code, not this) -->"
)
HEADLINE_END = "<!-- headline:end -->"
_DATA_RE = re.compile(r"<!-- headline-data: (.*?) -->", re.S)


# ------------------------------------------------------------------------------ running suites


def _accepts(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``kwargs`` that ``fn`` accepts."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in sig.parameters}


def _help_flags(module: str) -> set[str]:
    """The long options a suite script's ``--help`` lists."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))


def _run_subprocess(
    name: str, module: str, *, quick: bool, gpu: bool, out_dir: Path, timeout: float
) -> dict[str, Any]:
    """Start ``module`` as a script and read the JSON it writes."""
    flags = _help_flags(module)
    json_path = out_dir / f"{name}.raw.json"
    cmd = [sys.executable, "-m", module]
    if quick and "--quick" in flags:
        cmd.append("--quick")
    if gpu and "--gpu" in flags:
        cmd.append("--gpu")
    for opt in ("--json", "--out", "--output", "--json-out"):
        if opt in flags:
            cmd += [opt, str(json_path)]
            break
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return suite_result(
            name, status="error", reason=f"ran past {timeout:.0f} s: {shlex.join(cmd)}"
        )
    (out_dir / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    raw: dict[str, Any] | None = None
    if json_path.exists():
        raw = json.loads(json_path.read_text(encoding="utf-8"))
    else:  # a script that prints its JSON as the last stdout line
        for line in reversed(proc.stdout.strip().splitlines()):
            with contextlib.suppress(json.JSONDecodeError):
                candidate = json.loads(line)
                if isinstance(candidate, dict):
                    raw = candidate
                    break
    if proc.returncode != 0 or raw is None:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return suite_result(
            name, status="error", reason=f"`{shlex.join(cmd[1:])}` exited {proc.returncode}: {tail}"
        )
    res = normalize(name, raw)
    res["elapsed_s"] = round(time.monotonic() - t0, 2)
    return res


def run_suite(
    name: str,
    *,
    quick: bool,
    gpu: bool,
    out_dir: Path,
    timeout: float,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run one suite and return its normalised result; never raises."""
    module_name = SUITES[name]
    if not (REPO_ROOT / (module_name.replace(".", "/") + ".py")).exists():
        return suite_result(name, status="skipped", reason=f"{module_name} does not exist yet")
    t0 = time.monotonic()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return suite_result(
            name, status="error", reason=f"import {module_name}: {type(exc).__name__}: {exc}"
        )
    fn = getattr(module, "run", None)
    if callable(fn):
        given: dict[str, Any] = {"quick": quick, "gpu": gpu, "out_dir": out_dir}
        if only:
            given["only"] = list(only)
        kwargs = _accepts(fn, given)
        try:
            raw = fn(**kwargs)
        except SystemExit as exc:
            return suite_result(name, status="error", reason=f"exited {exc.code}")
        except Exception as exc:
            tb = traceback.format_exc(limit=4)
            return suite_result(
                name, status="error", reason=f"{type(exc).__name__}: {exc}", notes=[tb]
            )
        if isinstance(raw, dict):
            res = normalize(name, raw)
            res["elapsed_s"] = round(time.monotonic() - t0, 2)
            return res
    if hasattr(module, "main"):
        return _run_subprocess(
            name, module_name, quick=quick, gpu=gpu, out_dir=out_dir, timeout=timeout
        )
    return suite_result(name, status="error", reason=f"{module_name} has neither run() nor main()")


# ------------------------------------------------------------------------------ normalising


def normalize(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Bring a suite's own JSON into the :func:`bench.common.suite_result` shape."""
    if {"suite", "status", "rows"} <= set(raw):
        res = dict(raw)
        for key, default in suite_result(name).items():
            res.setdefault(key, default)
        return res
    rows = _find_rows(raw)
    res = suite_result(name, rows=rows, raw=raw, baseline=str(raw.get("baseline", "")))
    res["headline"] = _find_headline(raw)
    if isinstance(raw.get("notes"), list):
        res["notes"] = [str(n) for n in raw["notes"]]
    if raw.get("status") in ("skipped", "error"):
        res["status"] = raw["status"]
        res["reason"] = str(raw.get("reason", ""))
    return res


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                if not isinstance(v2, (dict, list)):
                    out[f"{k}.{k2}"] = v2
        elif not isinstance(v, list):
            out[k] = v
    return out


def _find_rows(raw: Any) -> list[dict[str, Any]]:
    """The longest list of flat-ish dicts in ``raw`` (a suite's table), flattened one level."""
    best: list[dict[str, Any]] = []

    def visit(node: Any) -> None:
        nonlocal best
        if isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
            if len(node) > len(best):
                best = [_flat(x) for x in node]
            for x in node:
                visit(x)
        elif isinstance(node, dict):
            for k, v in node.items():
                if k not in ("environment", "env", "machine"):
                    visit(v)

    visit(raw)
    return best


def _find_headline(raw: dict[str, Any]) -> dict[str, Any]:
    for key in ("headline", "summary"):
        if isinstance(raw.get(key), dict):
            return dict(raw[key])
    return {}


# ------------------------------------------------------------------------------ plots

#: Metrics a fallback plot looks for, in order; log scale where values span decades.
_PLOT_METRICS: tuple[tuple[str, bool], ...] = (
    ("MB/s", True),
    ("p50_ms", True),
    ("prompts_per_s", True),
    ("added_p50_ms", True),
    ("rps", False),
    ("default cost %", False),
)


def fallback_plot(name: str, rows: Sequence[dict[str, Any]], out_dir: Path) -> list[str]:
    """One bar chart for a suite that returned a table but no plot.

    Groups are the first text column, series the second (or a numeric setting such as
    ``concurrency``); the metric is the first of :data:`_PLOT_METRICS` the rows carry.
    """
    if not rows:
        return []
    metric = next(((m, log) for m, log in _PLOT_METRICS if m in rows[0]), None)
    if metric is None:
        return []
    key, log_y = metric
    text_cols = [k for k, v in rows[0].items() if isinstance(v, str) and k != "stage"]
    if not text_cols:
        return []
    gcol = text_cols[0]
    scol = text_cols[1] if len(text_cols) > 1 else None
    if scol is None:  # a numeric setting (concurrency, batch) makes the series instead
        scol = next(
            (k for k in ("concurrency", "batch", "tokens", "callers") if k in rows[0]), None
        )
    groups = list(dict.fromkeys(str(r.get(gcol)) for r in rows))
    names = list(dict.fromkeys(str(r.get(scol)) for r in rows)) if scol else [key]
    numeric = scol is not None and not isinstance(rows[0].get(scol), str)

    def value(g: str, n: str) -> float | None:
        for r in rows:
            if str(r.get(gcol)) == g and (scol is None or str(r.get(scol)) == n):
                v = r.get(key)
                return float(v) if isinstance(v, (int, float)) and v > 0 else None
        return None

    series = {(f"{scol} {n}" if numeric else n): [value(g, n) for g in groups] for n in names}
    path = bar_plot(
        out_dir / f"{name}_{slug(key)}.png",
        title=f"{name}: {key}" + (f" by {gcol} and {scol}" if scol else f" by {gcol}"),
        groups=groups,
        series=series,
        ylabel=key + (" (log)" if log_y else ""),
        log_y=log_y,
    )
    return [path.name] if path else []


# ------------------------------------------------------------------------------ headline


#: (key in the table, label, unit, extractor over the run's suite results)
def _h(suites: dict[str, dict[str, Any]], suite: str, *keys: str) -> Any:
    head = (
        suites.get(suite, {}).get("headline", {})
        if suites.get(suite, {}).get("status") == "ok"
        else {}
    )
    for k in keys:
        if head.get(k) is not None:
            return head[k]
    return None


HEADLINE_METRICS: tuple[tuple[str, str, Callable[[dict[str, dict[str, Any]]], Any]], ...] = (
    (
        "matcher_gbps",
        "Matcher throughput, 4 KB prompts, shipped packs (GB/s)",
        lambda s: _h(s, "matcher", "native_gbps_4kb", "gbps_4kb", "native_gb_s_4kb", "gb_s"),
    ),
    (
        "matcher_vs_re",
        "Matcher speedup vs per-rule Python `re` (x)",
        lambda s: _h(
            s, "matcher", "speedup_vs_re_per_rule_4kb", "ratio_vs_re_4kb", "speedup_4kb", "speedup"
        ),
    ),
    (
        "checks_input_p50",
        "Input pipeline (default policy) p50, 4 KB prompt (ms)",
        lambda s: _h(s, "checks", "input_pipeline_4kb_p50_ms"),
    ),
    (
        "checks_rules_p50",
        "Input pipeline without the classifier (rules only) p50, 4 KB prompt (ms)",
        lambda s: _h(s, "checks", "input_rules_only_4kb_p50_ms"),
    ),
    (
        "detector_p50_256",
        "Detector p50 at 256 tokens, batch 1 (ms)",
        lambda s: _h(s, "detector", "p50_ms_256_tokens", "p50_256_ms", "p50_ms_256"),
    ),
    (
        "detector_prefilter_p50_benign",
        "Detector with the CPU prefilter p50, 256-token everyday prompts, batch 1 (ms)",
        lambda s: _h(s, "detector", "prefilter_p50_ms_256_tokens_benign"),
    ),
    (
        "detector_prefilter_p50_attack",
        "Detector with the CPU prefilter p50, 256-token attack prompts, batch 1 (ms)",
        lambda s: _h(s, "detector", "prefilter_p50_ms_256_tokens_attack"),
    ),
    (
        "detector_pps",
        "Detector throughput, batched, 256 tokens (prompts/s)",
        lambda s: _h(s, "detector", "prompts_per_s", "throughput_prompts_s", "prompts_s"),
    ),
    (
        "e2e_added_p50",
        "E2E added latency p50, rules-only, concurrency 1 (ms)",
        lambda s: _h(s, "e2e", "added_p50_ms_rules_only", "added_p50_ms"),
    ),
    (
        "e2e_added_p99",
        "E2E added latency p99, rules-only, concurrency 1 (ms)",
        lambda s: _h(s, "e2e", "added_p99_ms_rules_only", "added_p99_ms"),
    ),
    (
        "e2e_tput_ratio",
        "Throughput through / direct Triton, rules-only, concurrency 64",
        lambda s: _h(s, "e2e", "throughput_ratio_rules_only", "throughput_ratio"),
    ),
    (
        "e2e_full_added_p50",
        "E2E added latency p50, full policy (rules + classifier), concurrency 1 (ms)",
        lambda s: _h(s, "e2e", "added_p50_ms_full"),
    ),
    (
        "e2e_full_tput_ratio",
        "Throughput through / direct Triton, full policy, concurrency 64",
        lambda s: _h(s, "e2e", "throughput_ratio_full"),
    ),
    (
        "peers_speedup",
        "Speedup vs LLM Guard, geometric mean of 4 families at 4 KB (x)",
        lambda s: _h(s, "peers", "speedup_geomean_4kb"),
    ),
)


def headline_values(suites: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers this run produced (None where a suite did not run)."""
    return {key: fn(suites) for key, _, fn in HEADLINE_METRICS}


def _read_headline_data(text: str) -> dict[str, Any]:
    m = _DATA_RE.search(text)
    if not m:
        return {}
    try:
        data = json.loads(m.group(1))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def render_headline(data: dict[str, Any]) -> str:
    """The headline block for RESULTS.md from the stored per-column data."""
    cols = [("cpu", "CPU (this machine)"), ("gpu", "GPU (last GPU run)")]
    lines = [
        HEADLINE_START,
        "## Headline",
        "",
        "| metric | " + " | ".join(label for _, label in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for key, label, _ in HEADLINE_METRICS:
        cells = []
        for col, _ in cols:
            meta = data.get(col, {})
            v = meta.get("values", {}).get(key)
            stale = ""
            if key in meta.get("stale", []):
                # A value kept from an earlier run says which run: its date and commit.
                stale = f" ({meta.get('from', {}).get(key, 'earlier run')})"
            cells.append(fmt(v) + stale if v is not None else "n/a")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for col, label in cols:
        meta = data.get(col)
        if not meta:
            lines.append(
                f"- **{label}**: no run recorded yet"
                + (
                    ": no GPU machine was available so far; run `make bench-gpu` on one "
                    "(`bench/README.md`, 'GPU runs'). No GPU number is estimated."
                    if col == "gpu"
                    else " (see `bench/README.md`)."
                )
            )
            continue
        lines.append(
            f"- **{label}**: {meta.get('machine', '?')}; commit `{meta.get('commit', '?')}`; "
            f"{meta.get('date', '?')}; `{meta.get('command', '?')}`"
            + (f"; not run: {meta['missing']}" if meta.get("missing") else "")
        )
    lines += [
        "",
        "n/a means the suite did not run in that column's last run; its report in "
        "`bench/results/` says why. Full tables and plots: `bench/results/latest/report.md`.",
        "",
        f"<!-- headline-data: {json.dumps(data, sort_keys=True)} -->",
        HEADLINE_END,
    ]
    return "\n".join(lines)


def update_results_md(run: dict[str, Any], *, path: Path = RESULTS_MD, command: str) -> None:
    """Rewrite only the headline block of RESULTS.md (created at the top if missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    data = _read_headline_data(text)
    col = "gpu" if run["environment"].get("gpu_run") else "cpu"
    values = headline_values(run["suites"])
    missing = [k for k, v in values.items() if v is None]
    prev_meta = data.get(col, {})
    prev = prev_meta.get("values", {})
    env = run["environment"]
    commit = env["commit"]["short"] + ("+dirty" if env["commit"]["dirty"] else "")
    this_run = f"{str(env['date'])[:10]}, {commit}"
    prev_run = f"{str(prev_meta.get('date', '?'))[:10]}, {prev_meta.get('commit', '?')}"
    prev_from = prev_meta.get("from", {})
    data[col] = {
        # A metric this run did not produce keeps its last value, marked in `stale`, and
        # `from` names the run (date, commit) each value came from.
        "values": {k: (v if v is not None else prev.get(k)) for k, v in values.items()},
        "stale": sorted(k for k in missing if prev.get(k) is not None),
        "from": {k: (this_run if v is not None else prev_from.get(k, prev_run))
                 for k, v in values.items() if v is not None or prev.get(k) is not None},
        "machine": machine_label(env),
        "commit": commit,
        "date": env["date"],
        "command": command,
        "missing": ", ".join(s for s, r in run["suites"].items() if r["status"] != "ok"),
    }
    block = render_headline(data)
    if HEADLINE_START in text and HEADLINE_END in text:
        pre, rest = text.split(HEADLINE_START, 1)
        _, post = rest.split(HEADLINE_END, 1)
        text = pre + block + post
    else:
        lines = text.splitlines()
        # After the title line, before everything else.
        if lines and lines[0].startswith("# "):
            text = lines[0] + "\n\n" + block + "\n\n" + "\n".join(lines[1:]).lstrip("\n")
        else:
            text = block + "\n\n" + text
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------ report


def render_report(run: dict[str, Any]) -> str:
    """The whole run as Markdown."""
    env = run["environment"]
    out = [
        f"# InferShield bench report — {env['date']}",
        "",
        f"- command: `{run['command']}`"
        + (" (quick: smoke counts, not for comparison)" if run["quick"] else ""),
        f"- commit: `{env['commit']['sha']}`"
        + (" (uncommitted changes)" if env["commit"]["dirty"] else ""),
        f"- host: `{env['host']}`; {env['os']}; Python {env['python']}",
        f"- CPU: {env['cpu']['model']} ({env['cpu'].get('usable_cpus')} usable of "
        f"{env['cpu'].get('logical_cpus')} logical); memory {env.get('memory_mib')} MiB; "
        f"load average at start {env.get('load_avg')}",
        "- GPU: "
        + (
            ", ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in env["gpus"])
            or "none"
        ),
        f"- onnxruntime providers: {', '.join(env['onnx_providers']) or 'none'}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(env["libraries"].items())),
        "",
        "## Headline",
        "",
        markdown_table(
            [
                {"metric": label, "value": run["headline"].get(key)}
                for key, label, _ in HEADLINE_METRICS
            ]
        ),
    ]
    for name, res in run["suites"].items():
        out += [f"## {name}", ""]
        status = res["status"] + (f": {res['reason']}" if res.get("reason") else "")
        out.append(f"- status: {status}")
        if res.get("baseline"):
            out.append(f"- baseline (same run): {res['baseline']}")
        if res.get("elapsed_s") is not None:
            out.append(f"- wall time: {res['elapsed_s']} s")
        out.append("")
        if res.get("headline"):
            out.append(
                "Headline: " + ", ".join(f"{k} = {fmt(v)}" for k, v in res["headline"].items())
            )
            out.append("")
        if res.get("rows"):
            out.append(markdown_table(res["rows"]))
        for p in res.get("plots", []):
            out.append(f"![{name}: {Path(p).stem}]({Path(p).name})")
            out.append("")
        notes = [n for n in res.get("notes", []) if n]
        if notes:
            out.append("Notes:")
            out.append("")
            for n in notes:
                if "\n" in n:
                    out += ["```", n.rstrip(), "```"]
                else:
                    out.append(f"- {n}")
            out.append("")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description="Run InferShield's benches and write a report."
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help=f"GPU run (CUDA EP); default suites: {', '.join(GPU_SUITES)}",
    )
    p.add_argument(
        "--suites",
        nargs="+",
        metavar="NAME",
        help=f"suites to run (default: all). Known: {', '.join(SUITES)}",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny counts: a smoke run of the harness; does not touch RESULTS.md",
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="CHECK",
        help="restrict suites that support it (checks) to these check names",
    )
    p.add_argument("--out-dir", type=Path, help="write here instead of bench/results/<run id>/")
    p.add_argument(
        "--update-results",
        choices=("auto", "yes", "no"),
        default="auto",
        help="rewrite RESULTS.md's headline (auto: only on full runs into bench/results)",
    )
    p.add_argument(
        "--headline-from",
        type=Path,
        metavar="RESULTS_JSON",
        help="only update RESULTS.md's headline from a results.json written elsewhere "
        "(e.g. brought back from a GPU machine); runs no suite",
    )
    p.add_argument(
        "--suite-timeout",
        type=float,
        default=None,
        help="seconds per subprocess suite (default 300 quick, 1800 full)",
    )
    return p.parse_args(argv)


def _suite_names(args: argparse.Namespace) -> list[str]:
    names: list[str] = []
    for item in args.suites or (list(GPU_SUITES) if args.gpu else list(SUITES)):
        names += [s for s in item.split(",") if s]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise SystemExit(f"bench.run: unknown suite(s) {unknown}; known: {list(SUITES)}")
    return list(dict.fromkeys(names))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.headline_from is not None:
        recorded = json.loads(args.headline_from.read_text(encoding="utf-8"))
        update_results_md(recorded, command=recorded.get("command", "python -m bench.run"))
        col = "GPU" if recorded["environment"].get("gpu_run") else "CPU"
        print(f"bench: {col} headline of {RESULTS_MD} updated from {args.headline_from}")
        return 0
    names = _suite_names(args)
    if args.gpu:
        ok, why = cuda_available()
        if not ok:
            print(
                f"bench.run --gpu: no usable CUDA execution provider: {why}.\n"
                "See bench/README.md ('GPU runs') for carrying onnxruntime-gpu and libhs to a "
                "GPU machine. No GPU numbers were produced.",
                file=sys.stderr,
            )
            return 2
    command = "python -m bench.run " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    command = command.strip()
    env = environment(gpu=args.gpu)
    run_id = f"{env['date'][:19].replace(':', '').replace('-', '')}-{env['commit']['short']}"
    out_dir: Path = args.out_dir or RESULTS_DIR / run_id
    out_dir.mkdir(parents=True, exist_ok=True)
    timeout = args.suite_timeout or (300.0 if args.quick else 1800.0)
    if args.gpu:
        os.environ["INFERSHIELD_BENCH_GPU"] = "1"

    print(f"bench: {len(names)} suite(s) → {out_dir}  [{machine_label(env)}]", flush=True)
    suites: dict[str, dict[str, Any]] = {}
    for name in names:
        t0 = time.monotonic()
        print(f"bench: {name} …", flush=True)
        res = run_suite(
            name, quick=args.quick, gpu=args.gpu, out_dir=out_dir, timeout=timeout, only=args.only
        )
        res.setdefault("elapsed_s", round(time.monotonic() - t0, 2))
        if res["status"] == "ok" and not res.get("plots"):
            try:
                res["plots"] = fallback_plot(name, res["rows"], out_dir)
            except Exception as exc:  # a plot must never lose the numbers
                res["notes"].append(f"plot failed: {type(exc).__name__}: {exc}")
        suites[name] = res
        msg = res["status"] + (f" ({res['reason']})" if res.get("reason") else "")
        print(f"bench: {name}: {msg} in {res['elapsed_s']} s", flush=True)

    run = {
        "command": command,
        "quick": args.quick,
        "environment": env,
        "suites": suites,
        "headline": headline_values(suites),
    }
    write_json(out_dir / "results.json", run)
    (out_dir / "report.md").write_text(render_report(run), encoding="utf-8")
    if args.out_dir is None:
        latest = RESULTS_DIR / "latest"
        with contextlib.suppress(OSError):
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(out_dir.name)
    update = args.update_results == "yes" or (
        args.update_results == "auto" and not args.quick and args.out_dir is None
    )
    if update:
        update_results_md(run, command=command)
        print(f"bench: updated {RESULTS_MD.relative_to(REPO_ROOT)} headline", flush=True)
    print(
        markdown_table(
            [{"metric": label, "value": run["headline"].get(k)} for k, label, _ in HEADLINE_METRICS]
        )
    )
    print(f"bench: report {out_dir / 'report.md'}")
    return 1 if any(r["status"] == "error" for r in suites.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
