"""The bench harness: one quick run writes JSON and Markdown with the expected keys.

Timings are never asserted: only that the harness runs, records where the numbers came from,
and keeps RESULTS.md's headline block intact when it rewrites it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# The benches live in the repo's top-level ``bench`` package, not in the installed one.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import common, run


def test_percentile_interpolates() -> None:
    assert common.percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert common.percentile([5.0], 99) == 5.0
    s = common.summarize([1.0, 2.0, 3.0])
    assert {"n", "p50_ms", "p99_ms", "mean_ms"} <= set(s)


def test_make_prompts_sizes_and_determinism() -> None:
    a = common.make_prompts(4096, 3)
    assert a == common.make_prompts(4096, 3)
    assert all(4000 <= len(p.encode("utf-8")) <= 4096 for p in a)


def test_quick_checks_run_writes_json_and_report(tmp_path: Path) -> None:
    # Only the secrets check: the smoke run must not wait for the signature database compile.
    args = ["--quick", "--suites", "checks", "--only", "secrets", "--out-dir", str(tmp_path)]
    rc = run.main(args)
    assert rc == 0
    data = json.loads((tmp_path / "results.json").read_text())
    env = data["environment"]
    assert {"date", "commit", "host", "cpu", "gpus", "libraries"} <= set(env)
    assert env["cpu"]["model"]
    checks = data["suites"]["checks"]
    assert {"status", "rows", "headline", "baseline", "notes"} <= set(checks)
    assert checks["status"] in ("ok", "skipped")
    if checks["status"] == "ok":
        row = checks["rows"][0]
        assert {"stage", "check", "size", "p50_ms", "p99_ms"} <= set(row)
        assert any(r["stage"] == "baseline" for r in checks["rows"])
    report = (tmp_path / "report.md").read_text()
    assert "## Headline" in report and "## checks" in report


def test_gpu_without_cuda_fails_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run, "cuda_available", lambda: (False, "no CUDAExecutionProvider"))
    assert run.main(["--gpu", "--quick", "--out-dir", "/nonexistent-never-written"]) == 2
    assert "no usable CUDA execution provider" in capsys.readouterr().err


def test_results_md_headline_keeps_other_column(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n## Matcher\n\nowned by another suite\n")
    env = common.environment()

    def fake_run(gpu: bool, value: float) -> dict[str, object]:
        e = dict(env, gpu_run=gpu)
        suites = {"peers": common.suite_result("peers", headline={"speedup_geomean_4kb": value})}
        return {"environment": e, "suites": suites}

    run.update_results_md(fake_run(False, 12.5), path=md, command="python -m bench.run")
    run.update_results_md(fake_run(True, 40.0), path=md, command="python -m bench.run --gpu")
    text = md.read_text()
    assert text.count(run.HEADLINE_START) == 1
    assert "## Matcher\n\nowned by another suite" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| Speedup vs LLM Guard"))
    assert "12.5" in row and "40" in row


def test_a_kept_headline_value_names_the_run_it_came_from(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    env = common.environment()

    def fake_run(date: str, headline: dict[str, float]) -> dict[str, object]:
        e = dict(env, gpu_run=False, date=date)
        return {"environment": e,
                "suites": {"peers": common.suite_result("peers", headline=headline)}}

    run.update_results_md(fake_run("2026-11-25T21:54:20+00:00", {"speedup_geomean_4kb": 45.0}),
                          path=md, command="python -m bench.run")
    run.update_results_md(fake_run("2026-11-27T08:00:00+00:00", {}), path=md,
                          command="python -m bench.run --suites detector")
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| Speedup vs LLM"))
    assert "45 (2026-11-25, " in row
    # A third run without the suite still credits the first one.
    run.update_results_md(fake_run("2026-11-28T08:00:00+00:00", {}), path=md,
                          command="python -m bench.run --suites detector")
    row = next(ln for ln in md.read_text().splitlines() if ln.startswith("| Speedup vs LLM"))
    assert "45 (2026-11-25, " in row and "2026-11-27" not in row
