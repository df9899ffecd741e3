"""Times LLM Guard's offline scanners; runs inside the bench-only venv (``.venv-peers``).

It is started by :mod:`bench.bench_peers` as ``.venv-peers/bin/python -m bench.peers_worker
--spec SPEC.json --out OUT.json`` and imports nothing from ``infershield`` (that package is not
installed in the peers venv, and LLM Guard's torch/transformers stack must not be installed in
the main one). Only :mod:`bench.common`'s standard-library helpers are shared.

The spec holds the prompts by size and the scanner parameters that make the comparison fair
(the same regex patterns and banned substrings InferShield uses). No model is loaded: the four
scanners compared here need none, and the hub is never contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# No hub access, ever: these scanners need no model.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.common import summarize, time_calls


def _quiet_logging() -> None:
    """LLM Guard logs every finding to stdout at WARNING; send errors only, to stderr."""
    try:
        from llm_guard.util import configure_logger

        configure_logger(log_level="ERROR", stream=sys.stderr)
    except Exception:  # older/newer versions: fall back to the stdlib knob
        import logging

        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)


def build_scanners(spec: dict[str, Any]) -> tuple[dict[str, Callable[[], Any]], list[str]]:
    """Factories for the four scanner families, and notes about what was adapted."""
    from llm_guard.input_scanners import BanSubstrings, InvisibleText, Regex, Secrets

    notes: list[str] = []
    patterns: list[str] = list(spec.get("regex_patterns") or [])
    if not patterns:
        raise SystemExit("spec has no regex_patterns")
    substrings: list[str] = list(spec.get("ban_substrings") or [])
    factories: dict[str, Callable[[], Any]] = {
        "invisible_text": InvisibleText,
        "regex": lambda: Regex(
            patterns=patterns, is_blocked=True, match_type="search", redact=False
        ),
        "secrets": Secrets,
    }
    if substrings:
        factories["ban_substrings"] = lambda: BanSubstrings(
            substrings=substrings, match_type="str", case_sensitive=False, redact=False
        )
    notes.append(
        "Secrets keeps every finding of earlier scans in its SecretsCollection (so its cost and "
        "its findings grow call after call); the bench builds a fresh Secrets scanner before "
        "each timed call, outside the timing, which favours LLM Guard."
    )
    notes.append(
        "Regex runs with match_type='search' and stops at the first pattern that matches "
        "(its fastest mode); InferShield's signatures check reports every matching rule."
    )
    return factories, notes


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Time every scanner on every prompt size; returns the JSON the driver reads."""
    t0 = time.perf_counter()
    _quiet_logging()
    factories, notes = build_scanners(spec)
    import_s = time.perf_counter() - t0
    iters = int(spec.get("iters", 50))
    max_seconds = float(spec.get("max_seconds", 10.0))
    results: list[dict[str, Any]] = []
    for family, factory in factories.items():
        fresh_each_call = family == "secrets"
        scanner = factory()
        for size, prompts in spec["prompts"].items():
            flagged = 0
            for p in prompts:
                s = factory() if fresh_each_call else scanner
                _, valid, _ = s.scan(p)
                flagged += 0 if valid else 1

            def one(
                prompts: list[str] = prompts,
                scanner: Any = scanner,
                idx: list[int] = [0],  # noqa: B006 - a per-closure call counter
            ) -> None:
                p = prompts[idx[0] % len(prompts)]
                idx[0] += 1
                scanner.scan(p)

            if fresh_each_call:
                # Build outside the timed region, then time only scan().
                samples: list[float] = []
                deadline = time.perf_counter() + max_seconds
                for i in range(max(1, iters)):
                    s = factory()
                    p = prompts[i % len(prompts)]
                    ts = time.perf_counter()
                    s.scan(p)
                    samples.append((time.perf_counter() - ts) * 1000.0)
                    if ts > deadline:
                        break
            else:
                samples = time_calls(one, iters=iters, warmup=2, max_seconds=max_seconds)
            results.append(
                {
                    "family": family,
                    "size": int(size),
                    "flagged": flagged,
                    "prompts": len(prompts),
                    **summarize(samples),
                }
            )
    return {
        "peer": "llm-guard",
        "version": metadata.version("llm-guard"),
        "python": sys.version.split()[0],
        "import_and_build_s": round(import_s, 3),
        "results": results,
        "notes": notes,
        "regex_patterns": len(spec.get("regex_patterns") or []),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text(encoding="utf-8"))
    out = run(spec)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
