"""Each check of the default policy: p50/p99 per prompt size, single thread.

Every check of the shipped default policy (input and output stages) is built once, as the
server builds it, and timed on a fresh :class:`CheckContext` per call, so analysis that checks
share through ``ctx.memo`` is counted in each check that needs it. In the same run the whole
input and output pipelines are timed (where the memo *is* shared), and so is the baseline: an
empty pipeline (the framework's own cost) and one pass of Python's ``str.casefold`` over the
text (the cost of touching every byte once from Python). The native analysis is timed twice,
with and without the canonical view (``analyze(canonical=False)``): the difference is what
building the canonical view costs every request.

Run alone: ``python -m bench.bench_checks [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    PROMPT_SIZES,
    QUICK_PROMPT_SIZES,
    RESULTS_DIR,
    bar_plot,
    finish,
    make_prompts,
    ratio,
    size_label,
    suite_result,
    summarize,
    time_calls,
)

SUITE = "checks"
#: Check types that run a model; "rules only" pipelines leave them out.
MODEL_CHECKS: frozenset[str] = frozenset({"classifier"})


def _as_page(text: str) -> str:
    """``text`` as an HTML page: its sentences as paragraphs, its first words in a comment."""
    paras = "".join(f"<p>{p}</p>" for p in text.split(". ") if p)
    return (f'<html><body><div class="post">{paras}</div>'
            f"<!-- {' '.join(text.split()[:12])} --></body></html>")


def _timer(fn: Any, prompts: list[str], *, iters: int, max_seconds: float) -> dict[str, Any]:
    """Time ``fn(text)`` round-robin over ``prompts``."""
    idx = [0]

    def one() -> None:
        p = prompts[idx[0] % len(prompts)]
        idx[0] += 1
        fn(p)

    return summarize(time_calls(one, iters=iters, warmup=min(5, iters), max_seconds=max_seconds))


def run(
    *,
    quick: bool = False,
    out_dir: Path | None = None,
    sizes: tuple[int, ...] | None = None,
    only: Sequence[str] | None = None,
    **_: Any,
) -> dict[str, Any]:
    """Time every check of the default policy per prompt size; returns a suite result.

    ``only`` restricts the suite to those check names (a smoke run that skips compiling
    the large signature database, say); the pipelines then hold only those checks.
    """
    try:
        from infershield.checks.base import CheckContext
        from infershield.config import load_config
        from infershield.pipeline import Pipeline, Step
        from infershield.policy import build_check
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"infershield not importable: {exc}")

    sizes = sizes or (QUICK_PROMPT_SIZES if quick else PROMPT_SIZES)
    iters = 20 if quick else 200
    max_seconds = 2.0 if quick else 5.0
    n_prompts = 8 if quick else 64
    cfg = load_config(None, env={})
    notes: list[str] = []

    built: list[tuple[str, str, Any]] = []  # (stage, name, check)
    steps: dict[str, list[Any]] = {"input": [], "output": []}
    rules_only: list[Any] = []  # the input steps without a model
    for stage in ("input", "output"):
        for i, spec in enumerate(getattr(cfg.policy, stage)):
            if not spec.enabled or (only and spec.display_name not in only):
                continue
            t0 = time.perf_counter()
            try:
                check = build_check(spec, stage, cfg, f"policy.{stage}[{i}]")  # type: ignore[arg-type]
            except Exception as exc:
                notes.append(f"{stage}/{spec.display_name}: not built ({exc})")
                continue
            build_s = time.perf_counter() - t0
            if build_s > 1.0:
                notes.append(f"{stage}/{spec.display_name}: built in {build_s:.1f} s (start-up)")
            built.append((stage, spec.display_name, check))
            steps[stage].append(Step(check, spec.on_error))
            if stage == "input" and spec.type not in MODEL_CHECKS:
                rules_only.append(Step(check, spec.on_error))
    # The pipelines reuse the checks built above, in policy order, as the server runs them.
    pipelines = {
        f"{stage} pipeline (all)": (stage, Pipeline(st, fail_fast=cfg.policy.fail_fast))
        for stage, st in steps.items()
        if st
    }
    if rules_only and len(rules_only) < len(steps["input"]):
        pipelines["input pipeline (rules only)"] = (
            "input",
            Pipeline(rules_only, fail_fast=cfg.policy.fail_fast),
        )
    missing = [
        f"{stage}/{spec.display_name}"
        for stage in ("input", "output")
        for spec in getattr(cfg.policy, stage)
        if spec.enabled
        and not (only and spec.display_name not in only)
        and all(name != spec.display_name for _, name, _ in built)
    ]
    if missing:
        notes.append(f"pipelines lack {', '.join(missing)} (not built), so they understate")

    empty = Pipeline([], fail_fast=False)
    rows: list[dict[str, Any]] = []
    try:
        for size in sizes:
            prompts = make_prompts(size, n_prompts)
            label = size_label(size)

            def baseline_casefold(t: str) -> None:
                t.casefold()

            base = _timer(baseline_casefold, prompts, iters=iters, max_seconds=max_seconds)
            rows.append(_row("baseline", "str.casefold (one pass)", label, size, base, None))
            emp = _timer(
                lambda t: empty.run(CheckContext(text=t)),
                prompts,
                iters=iters,
                max_seconds=max_seconds,
            )
            rows.append(_row("baseline", "empty pipeline", label, size, emp, None))
            # What the canonical view costs: the native analysis without it (before) and
            # with it (after), on the same prompts in the same run.
            from infershield.native import analyze

            for canonical, what in ((False, "plain fold"), (True, "canonical view")):
                a = _timer(
                    lambda t, c=canonical: analyze(t, canonical=c),
                    prompts,
                    iters=iters,
                    max_seconds=max_seconds,
                )
                rows.append(_row("analysis", f"native analyze ({what})", label, size, a,
                                 base["p50_ms"]))
            # What the classifier's views cost before any model runs: the content view, the
            # sentence units and the fold of each unit (localised scoring's text work).
            from infershield.checks.input.content import content_view, sentence_units
            from infershield.native import normalize

            def units_folded(t: str) -> None:
                for u in sentence_units(content_view(t)):
                    normalize(u)

            v = _timer(units_folded, prompts, iters=iters, max_seconds=max_seconds)
            rows.append(_row("analysis", "classifier views (content + units, folded)", label,
                             size, v, base["p50_ms"]))
            # The content view alone: on plain prompts (a scan for markup) and on the same
            # prompts as HTML pages (parsed: the page's text and its hidden parts).
            from infershield.checks.input.content import content

            pages = [_as_page(t) for t in prompts]
            for texts, what in ((prompts, "plain text"), (pages, "HTML page")):
                v = _timer(content, texts, iters=iters, max_seconds=max_seconds)
                rows.append(_row("analysis", f"content view ({what})", label, size, v,
                                 base["p50_ms"]))
            for stage, name, check in built:

                def one_check(t: str, check: Any = check, stage: str = stage) -> None:
                    check.check(CheckContext(text=t, stage=stage))

                try:
                    s = _timer(one_check, prompts, iters=iters, max_seconds=max_seconds)
                except Exception as exc:
                    notes.append(f"{stage}/{name} @ {label}: raised {type(exc).__name__}: {exc}")
                    continue
                rows.append(_row(stage, name, label, size, s, base["p50_ms"]))
            for pname, (stage, pipe) in pipelines.items():

                def one_pipe(t: str, pipe: Any = pipe, stage: str = stage) -> None:
                    pipe.run(CheckContext(text=t, stage=stage))

                s = _timer(one_pipe, prompts, iters=iters, max_seconds=max_seconds)
                rows.append(_row(stage, pname, label, size, s, base["p50_ms"]))
    finally:
        for _, _, check in built:
            check.close()

    plots: list[str] = []
    if out_dir is not None:
        plots = _plots(rows, out_dir)
    headline = {}
    for r in rows:
        if r["size"] != "4 KB":
            continue
        if r["check"] == "input pipeline (all)":
            headline["input_pipeline_4kb_p50_ms"] = r["p50_ms"]
            headline["input_pipeline_4kb_p99_ms"] = r["p99_ms"]
        if r["check"] == "input pipeline (rules only)":
            headline["input_rules_only_4kb_p50_ms"] = r["p50_ms"]
            headline["input_rules_only_4kb_p99_ms"] = r["p99_ms"]
    return suite_result(
        SUITE,
        status="ok" if built else "skipped",
        reason="" if built else "no check of the default policy could be built",
        baseline="str.casefold over the same text, and an empty pipeline",
        rows=rows,
        headline=headline,
        notes=notes,
        plots=plots,
    )


def _row(
    stage: str, name: str, label: str, size: int, s: dict[str, Any], base_p50: float | None
) -> dict[str, Any]:
    mb_s = (size / 1e6) / (s["p50_ms"] / 1e3) if s["p50_ms"] else None
    return {
        "stage": stage,
        "check": name,
        "size": label,
        "bytes": size,
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "mean_ms": s["mean_ms"],
        "n": s["n"],
        "MB/s (p50)": round(mb_s, 1) if mb_s else None,
        "x casefold": ratio(s["p50_ms"], base_p50) if base_p50 else None,
    }


def _plots(rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    names = [r["check"] for r in rows if r["stage"] != "baseline"]
    names = list(dict.fromkeys(names))
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    plots = []
    for metric in ("p50_ms", "p99_ms"):
        series = {
            sz: [
                next((r[metric] for r in rows if r["check"] == n and r["size"] == sz), None)
                for n in names
            ]
            for sz in sizes
        }
        p = bar_plot(
            out_dir / f"checks_{metric}.png",
            title=f"Per-check latency ({metric.split('_')[0]}) by prompt size",
            groups=names,
            series=series,
            ylabel="ms (log)",
            log_y=True,
        )
        if p:
            plots.append(p.name)
    return plots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="only these check names")
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "checks.json"
    res = run(quick=args.quick, out_dir=out.parent, only=args.only)
    return finish(res, out)


if __name__ == "__main__":
    sys.exit(main())
