"""InferShield against LLM Guard's offline scanners, per scanner family, on the same prompts.

Families and what each side runs:

==============  ============================  ===========================================
family          LLM Guard (input scanner)     InferShield check
==============  ============================  ===========================================
invisible_text  ``InvisibleText``             ``invisible_text`` (native, C++)
regex           ``Regex`` (the same patterns) ``signatures`` (Hyperscan, default packs)
secrets         ``Secrets`` (detect-secrets)  ``secrets`` (Hyperscan span rules + validators)
ban_substrings  ``BanSubstrings``             ``ban_substrings`` (the same substrings)
==============  ============================  ===========================================

LLM Guard pulls torch and transformers, so it never enters the main venv: it lives in a
bench-only venv (``make bench-peers-env`` creates ``.venv-peers``), and this driver starts
:mod:`bench.peers_worker` there as a subprocess that writes JSON. If that venv is missing or
``llm_guard`` does not import, the suite is reported as skipped with the exact reason.

The regex family gives LLM Guard every pattern of InferShield's default signature packs that
Python's ``re`` can compile (with the rule's flags as inline flags); the count of patterns
``re`` rejects is reported. Speedup = LLM Guard p50 / InferShield p50 (higher is better for
InferShield). Flag counts are shown so a fast scanner that misses everything stands out.

Run alone: ``python -m bench.bench_peers [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    DATA_DIR,
    PROMPT_SIZES,
    QUICK_PROMPT_SIZES,
    REPO_ROOT,
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

SUITE = "peers"
FAMILIES: tuple[str, ...] = ("invisible_text", "regex", "secrets", "ban_substrings")
DEFAULT_SIGNATURE_PACKS: tuple[str, ...] = (
    "injection",
    "jailbreak",
    "exfiltration",
    "obfuscation",
    "multilingual",
)
_RE_FLAGS = {"caseless": "i", "dotall": "s", "multiline": "m"}


def peers_python() -> Path:
    """The bench-only interpreter: ``$INFERSHIELD_PEERS_PYTHON`` or ``.venv-peers/bin/python``."""
    env = os.environ.get("INFERSHIELD_PEERS_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-peers" / "bin" / "python"


def peer_unavailable_reason() -> str:
    """Why LLM Guard cannot run here, or ``""`` when it can."""
    py = peers_python()
    if not py.exists():
        return (
            f"bench-only venv not found ({py}); create it with `make bench-peers-env` "
            "(installs a CPU torch, then llm-guard, into .venv-peers)"
        )
    try:
        proc = subprocess.run(
            [str(py), "-c", "import llm_guard.input_scanners"],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot start {py}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        reason = f"llm_guard does not import in {py}: {last}"
        log = py.parent.parent / "install.log"
        if log.exists():
            tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-2:]
            reason += f"; last lines of {log}: {' | '.join(tail)}"
        return reason
    return ""


def ban_substrings() -> list[str]:
    """The banned substrings both sides get (``bench/data/ban_substrings.txt``)."""
    lines = (DATA_DIR / "ban_substrings.txt").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def signature_packs() -> list[str]:
    """The packs the default policy's ``signatures`` check uses."""
    try:
        from infershield.config import load_config

        cfg = load_config(None, env={})
        for spec in cfg.policy.input:
            if spec.type == "signatures":
                packs = spec.options.get("packs")
                if packs:
                    return list(packs)
    except Exception:
        pass
    return list(DEFAULT_SIGNATURE_PACKS)


def python_patterns(packs: list[str]) -> tuple[list[str], list[str]]:
    """The packs' patterns as Python regexes with inline flags; and the ids ``re`` rejects."""
    from infershield.rules.packs import load_packs

    ok: list[str] = []
    rejected: list[str] = []
    for rule in load_packs(packs):
        flags = "".join(sorted(_RE_FLAGS[f] for f in rule.flags if f in _RE_FLAGS))
        pat = f"(?{flags}){rule.pattern}" if flags else rule.pattern
        try:
            re.compile(pat)
        except re.error:
            rejected.append(rule.id)
            continue
        ok.append(pat)
    return ok, rejected


def build_infershield(packs: list[str], substrings: list[str]) -> tuple[dict[str, Any], list[str]]:
    """InferShield's check for each family (missing ones are noted, not fatal)."""
    from infershield.checks.base import resolve
    from infershield.config import CheckSpec, Config
    from infershield.policy import build_check

    cfg = Config()
    wanted: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
        "invisible_text": ("invisible_text", "input", [{}]),
        "regex": ("signatures", "input", [{"packs": packs}]),
        "secrets": ("secrets", "output", [{}]),
        # Option names differ between check versions; try the likely spellings.
        "ban_substrings": (
            "ban_substrings",
            "output",
            [{"substrings": substrings}, {"patterns": substrings}, {"words": substrings}],
        ),
    }
    checks: dict[str, Any] = {}
    notes: list[str] = []
    for family, (ctype, stage, option_sets) in wanted.items():
        err = ""
        try:
            cls = resolve(ctype)
        except Exception as exc:
            notes.append(f"{family}: InferShield check {ctype!r} unavailable ({exc})")
            continue
        if stage not in cls.stages:
            stage = cls.stages[0]
        for options in option_sets:
            try:
                spec = CheckSpec(type=ctype, options=options)
                checks[family] = build_check(spec, stage, cfg, f"bench.{family}")  # type: ignore[arg-type]
                break
            except Exception as exc:
                err = str(exc)
        else:
            notes.append(f"{family}: InferShield check {ctype!r} not built ({err})")
    return checks, notes


def _time_infershield(
    check: Any, prompts: list[str], *, iters: int, max_seconds: float
) -> tuple[dict[str, Any], int]:
    from infershield.checks.base import CheckContext
    from infershield.verdict import Decision

    stage = "output" if "input" not in check.stages else "input"
    flagged = sum(
        1
        for p in prompts
        if check.check(CheckContext(text=p, stage=stage)).decision is not Decision.ALLOW
    )
    idx = [0]

    def one() -> None:
        p = prompts[idx[0] % len(prompts)]
        idx[0] += 1
        check.check(CheckContext(text=p, stage=stage))

    return summarize(time_calls(one, iters=iters, warmup=2, max_seconds=max_seconds)), flagged


def run(*, quick: bool = False, out_dir: Path | None = None, **_: Any) -> dict[str, Any]:
    """Both sides on the same prompts; returns a suite result (skipped with a reason if the
    peer cannot run)."""
    try:
        packs = signature_packs()
        patterns, rejected = python_patterns(packs)
        substrings = ban_substrings()
        checks, notes = build_infershield(packs, substrings)
    except Exception as exc:
        return suite_result(
            SUITE, status="skipped", reason=f"InferShield side not buildable: {exc}"
        )
    reason = peer_unavailable_reason()
    if reason:
        for c in checks.values():
            c.close()
        return suite_result(SUITE, status="skipped", reason=reason)
    notes.append(
        "signatures scans every view of a text in one native call (raw, normalised, hidden "
        "Unicode-tag text, decoded base64/hex/url blobs), so it does more work per prompt than "
        "LLM Guard's Regex, which scans the raw text only."
    )
    if rejected:
        notes.append(
            f"{len(rejected)} of {len(patterns) + len(rejected)} signature patterns are not "
            f"valid Python regexes and were left out of LLM Guard's Regex: "
            f"{', '.join(rejected[:8])}{' …' if len(rejected) > 8 else ''}"
        )
    sizes = QUICK_PROMPT_SIZES if quick else PROMPT_SIZES
    iters = 10 if quick else 200
    max_seconds = 2.0 if quick else 6.0
    n_prompts = 6 if quick else 32
    prompts = {str(s): make_prompts(s, n_prompts, attack_rate=0.3, seed=11) for s in sizes}

    with tempfile.TemporaryDirectory(prefix="infershield-peers-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "out.json"
        spec = {
            "prompts": prompts,
            "regex_patterns": patterns,
            "ban_substrings": substrings,
            "iters": iters,
            "max_seconds": max_seconds,
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        timeout = 600 if quick else 1800
        try:
            proc = subprocess.run(
                [
                    str(peers_python()),
                    "-m",
                    "bench.peers_worker",
                    "--spec",
                    str(spec_path),
                    "--out",
                    str(out_path),
                ],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={
                    **os.environ,
                    "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1",
                    "PYTHONPATH": str(REPO_ROOT),
                },
                check=False,
            )
        except subprocess.TimeoutExpired:
            return suite_result(
                SUITE, status="error", reason=f"LLM Guard worker ran past {timeout} s"
            )
        if proc.returncode != 0 or not out_path.exists():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            return suite_result(
                SUITE,
                status="error",
                reason=f"LLM Guard worker failed (rc {proc.returncode}): {tail}",
            )
        peer = json.loads(out_path.read_text(encoding="utf-8"))

    rows: list[dict[str, Any]] = []
    peer_rows = {(r["family"], r["size"]): r for r in peer["results"]}
    try:
        for family in FAMILIES:
            for size in sizes:
                pr = peer_rows.get((family, size))
                check = checks.get(family)
                ours: dict[str, Any] | None = None
                our_flagged = None
                if check is not None:
                    ours, our_flagged = _time_infershield(
                        check, prompts[str(size)], iters=iters, max_seconds=max_seconds
                    )
                if pr is None and ours is None:
                    continue
                rows.append(
                    {
                        "family": family,
                        "size": size_label(size),
                        "infershield p50 ms": ours["p50_ms"] if ours else None,
                        "infershield p99 ms": ours["p99_ms"] if ours else None,
                        "llm-guard p50 ms": pr["p50_ms"] if pr else None,
                        "llm-guard p99 ms": pr["p99_ms"] if pr else None,
                        "speedup (p50)": ratio(pr["p50_ms"], ours["p50_ms"])
                        if pr and ours
                        else None,
                        "flagged infershield": our_flagged,
                        "flagged llm-guard": pr["flagged"] if pr else None,
                        "prompts": len(prompts[str(size)]),
                    }
                )
    finally:
        for c in checks.values():
            c.close()

    headline: dict[str, Any] = {"llm_guard_version": peer.get("version")}
    ref = size_label(4096)
    speedups = []
    for r in rows:
        if r["size"] == ref and r["speedup (p50)"]:
            headline[f"speedup_{r['family']}_4kb"] = r["speedup (p50)"]
            speedups.append(r["speedup (p50)"])
    if speedups:
        headline["speedup_geomean_4kb"] = round(
            math.exp(sum(math.log(s) for s in speedups) / len(speedups)), 2
        )
    plots: list[str] = []
    if out_dir is not None:
        groups = [f"{r['family']}\n{r['size']}" for r in rows]
        p = bar_plot(
            out_dir / "peers_p50.png",
            title="p50 per scan: InferShield vs LLM Guard (same prompts)",
            groups=groups,
            series={
                "InferShield": [r["infershield p50 ms"] for r in rows],
                f"LLM Guard {peer.get('version', '')}": [r["llm-guard p50 ms"] for r in rows],
            },
            ylabel="ms (log)",
            log_y=True,
        )
        if p:
            plots.append(p.name)
    return suite_result(
        SUITE,
        baseline=f"LLM Guard {peer.get('version')} offline input scanners, same prompts",
        rows=rows,
        headline=headline,
        notes=notes + list(peer.get("notes", [])),
        plots=plots,
        raw={"peer": {k: v for k, v in peer.items() if k != "results"}, "packs": packs},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "peers.json"
    res = run(quick=args.quick, out_dir=out.parent)
    return finish(res, out)


if __name__ == "__main__":
    sys.exit(main())
