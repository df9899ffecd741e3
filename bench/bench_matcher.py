"""Native Hyperscan matcher vs Python ``re`` over the same rule set, single thread.

Three engines answer the same question, "which rules match this prompt":

* ``native``: :class:`infershield.native.Matcher` (one Hyperscan database, ``matched_indices``,
  UTF-8 encoding of the prompt included in the timing);
* ``re_per_rule``: every rule compiled as its own ``re`` pattern, ``search`` for each;
* ``re_alternation``: all rules as one ``re`` alternation of named groups, ``finditer``
  (fewer answers than the others: overlapping matches are lost; it is the usual shortcut).

The rule set is the shipped signature packs (``infershield.rules.packs.load_packs`` over the
``signatures`` check's default packs); rules Python's ``re`` cannot compile are dropped from
*every* engine so all three run the same set. Without the packs a built-in representative
set of ~100 patterns is used. Prompts are 200 B, 4 KB and 64 KB, built from the seed
fragments in ``bench/data`` (mostly benign, 20 % with an attack phrase).

Run alone: ``python -m bench.bench_matcher [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import (
    PROMPT_SIZES,
    QUICK_PROMPT_SIZES,
    RESULTS_DIR,
    finish,
    make_prompts,
    ratio,
    size_label,
    suite_result,
    summarize,
)
from infershield.native import Matcher, Pattern

SUITE = "matcher"
#: Prompts per size (full run, quick run).
COUNTS: dict[int, tuple[int, int]] = {200: (3000, 300), 4096: (600, 60), 65536: (40, 6)}
#: Wall-clock cap per (engine, size) measurement, seconds.
MAX_SECONDS = 20.0

# A representative fallback rule set: instruction override, personas, extraction,
# delimiters, obfuscation, multilingual, PII/secret shapes.
_FALLBACK: tuple[str, ...] = (
    r"ignore\s+(all\s+)?(the\s+)?(previous|prior|above|earlier)\s+(instructions|prompts?|rules)",
    r"disregard\s+(all\s+)?(previous|prior|above)\s+(instructions|directions)",
    r"forget\s+(everything|all)\s+(you\s+)?(were\s+)?(told|said|learned)",
    r"override\s+(your|the)\s+(system\s+)?(prompt|instructions|rules)",
    r"new\s+instructions?\s*:",
    r"from\s+now\s+on,?\s+you\s+(are|will)",
    r"you\s+are\s+no\s+longer\s+(an?\s+)?(ai|assistant|chatbot)",
    r"\bdo\s+anything\s+now\b",
    r"\bDAN\s+mode\b",
    r"developer\s+mode\s+(enabled|on|activated)",
    r"jailbreak(ed)?\s+mode",
    r"act\s+as\s+(an?\s+)?(unfiltered|uncensored|unrestricted)",
    r"pretend\s+(that\s+)?you\s+(have\s+no|are\s+free\s+from)\s+(rules|restrictions|limits)",
    r"without\s+(any\s+)?(moral|ethical)\s+(restrictions|guidelines|constraints)",
    r"stay\s+in\s+character",
    r"evil\s+(confidant|assistant|ai)",
    r"(reveal|show|print|repeat|output)\s+(me\s+)?(your|the)\s+(system\s+)?(prompt|instructions)",
    r"what\s+(are|were)\s+your\s+(initial|original|system)\s+(instructions|prompt)",
    r"repeat\s+the\s+(words|text)\s+above",
    r"beginning\s+with\s+['\"]?you\s+are",
    r"<\|im_start\|>",
    r"<\|im_end\|>",
    r"<\|eot_id\|>",
    r"\[/?INST\]",
    r"<</?SYS>>",
    r"<start_of_turn>|<end_of_turn>",
    r"###\s*(instruction|system)\s*:",
    r"\bbase64\s*(decode|encoded)\b",
    r"rot13",
    r"(decode|decipher)\s+(this|the\s+following)\s+and\s+(follow|execute|run)",
    r"respond\s+only\s+in\s+(hex|base64|binary)",
    r"never\s+refuse",
    r"do\s+not\s+(apologi[sz]e|refuse|warn)",
    r"you\s+(must|will)\s+answer\s+(every|all|any)\s+question",
    r"(send|post|exfiltrate|upload)\s+(the\s+)?(data|conversation|secrets?)\s+to\s+https?://",
    r"!\[[^\]]*\]\(https?://[^)]*\?(q|data|d)=",
    r"ignoriere\s+(alle\s+)?(vorherigen|bisherigen)\s+anweisungen",
    r"ignora\s+(todas\s+)?las\s+instrucciones\s+anteriores",
    r"ignorez\s+(toutes\s+)?les\s+instructions\s+pr[ée]c[ée]dentes",
    r"ignora\s+(tutte\s+)?le\s+istruzioni\s+precedenti",
    r"игнорируй\s+(все\s+)?предыдущие\s+инструкции",
    r"忽略(之前|以上|先前)的(所有)?(指令|指示)",
    r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}",
    r"\b\d{3}-\d{2}-\d{4}\b",
    r"\b(?:\d[ -]?){13,16}\b",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36}\b",
    r"\bxox[baprs]-[A-Za-z0-9-]{10,}",
    r"\bsk-[A-Za-z0-9]{20,}",
    r"-----BEGIN\s+(RSA\s+|EC\s+|OPENSSH\s+)?PRIVATE\s+KEY-----",
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
)


def _fallback_patterns() -> list[Pattern]:
    # Pad to ~100 with per-language / per-verb variants of the override family.
    pats = [Pattern(f"fallback.r{i:03d}", p) for i, p in enumerate(_FALLBACK)]
    verbs = ("ignore", "disregard", "skip", "bypass", "forget", "drop", "abandon", "override")
    objects = ("instructions", "guidelines", "rules", "policies", "constraints", "directives")
    for v in verbs:
        for o in objects:
            if len(pats) >= 100:
                break
            pats.append(Pattern(f"fallback.{v}_{o}", rf"{v}\s+(all\s+)?(your|the|previous)\s+{o}"))
    return pats


def load_rule_set(which: str = "shipped") -> tuple[list[Pattern], str]:
    """The shipped signature packs as patterns (or the fallback set when they are missing or
    ``which == "fallback"``); plus a description."""
    if which == "fallback":
        return _fallback_patterns(), "built-in fallback set"
    try:
        from infershield.checks.input.signatures import DEFAULT_PACKS
        from infershield.rules.packs import load_packs

        rules = load_packs(DEFAULT_PACKS)
        pats: list[Pattern] = [r.to_pattern() for r in rules]
        if pats:
            return pats, f"shipped packs {', '.join(DEFAULT_PACKS)}"
    except ImportError:
        pass
    return _fallback_patterns(), "built-in fallback set"


def _re_flags(p: Pattern) -> int:
    f = 0
    if p.caseless:
        f |= re.IGNORECASE
    if p.dotall:
        f |= re.DOTALL
    if p.multiline:
        f |= re.MULTILINE
    return f


def _inline(p: Pattern) -> str:
    flags = ("i" if p.caseless else "") + ("s" if p.dotall else "") + ("m" if p.multiline else "")
    return f"(?{flags}:{p.expression})" if flags else f"(?:{p.expression})"


def common_rule_set(patterns: Sequence[Pattern]) -> tuple[list[Pattern], list[re.Pattern[str]]]:
    """The patterns both engines compile, with their ``re`` counterparts."""
    kept: list[Pattern] = []
    compiled: list[re.Pattern[str]] = []
    for p in patterns:
        try:
            rx = re.compile(p.expression, _re_flags(p))
        except (re.error, OverflowError):
            continue
        kept.append(p)
        compiled.append(rx)
    return kept, compiled


def _alternation(patterns: Sequence[Pattern]) -> re.Pattern[str] | None:
    try:
        return re.compile("|".join(f"(?P<r{i}>{_inline(p)})" for i, p in enumerate(patterns)))
    except (re.error, OverflowError):
        return None


def _measure(fn: Callable[[str], object], prompts: Sequence[str]) -> dict[str, Any]:
    """Per-prompt latencies (ms) and throughput over the prompt list (stops at MAX_SECONDS)."""
    for p in prompts[:3]:
        fn(p)
    lat: list[float] = []
    nbytes = 0
    start = time.perf_counter()
    for p in prompts:
        t0 = time.perf_counter()
        fn(p)
        lat.append((time.perf_counter() - t0) * 1000.0)
        nbytes += len(p.encode("utf-8"))
        if t0 - start > MAX_SECONDS:
            break
    total_s = sum(lat) / 1000.0
    s = summarize(lat)
    s["mb_s"] = round(nbytes / 1e6 / total_s, 2) if total_s else None
    mean_size = nbytes / max(len(lat), 1)
    s["mb_s_p50"] = round(mean_size / 1e6 / (s["p50_ms"] / 1e3), 2) if s["p50_ms"] else None
    return s


def _measure_batch(matcher: Matcher, prompts: Sequence[str]) -> dict[str, Any]:
    """One ``matched_indices_batch`` call over all prompts, best of 5 (engine speed with the
    per-call Python overhead amortised)."""
    nbytes = sum(len(p.encode("utf-8")) for p in prompts)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        matcher.matched_indices_batch(prompts)
        best = min(best, time.perf_counter() - t0)
    per_ms = best * 1000.0 / max(len(prompts), 1)
    mb_s = round(nbytes / 1e6 / best, 2) if best else None
    return {
        "n": len(prompts),
        "mb_s": mb_s,
        "mb_s_p50": None,
        "p50_ms": None,
        "p99_ms": None,
        "mean_ms": round(per_ms, 6),
    }


def run(
    *, quick: bool = False, out_dir: Path | None = None, rules: str = "shipped"
) -> dict[str, Any]:
    """Run the suite; returns the shape ``bench.run`` expects."""
    del out_dir  # no plots for this suite
    patterns, source = load_rule_set(rules)
    kept, compiled = common_rule_set(patterns)
    dropped = len(patterns) - len(kept)
    matcher = Matcher(kept)
    alt = _alternation(kept)

    def native(text: str) -> set[int]:
        return matcher.matched_indices(text)

    def per_rule(text: str) -> set[int]:
        return {i for i, rx in enumerate(compiled) if rx.search(text)}

    def alternation(text: str) -> set[int]:
        assert alt is not None
        return {int(m.lastgroup[1:]) for m in alt.finditer(text) if m.lastgroup}

    engines: dict[str, Callable[[str], object]] = {"native": native, "re_per_rule": per_rule}
    if alt is not None:
        engines["re_alternation"] = alternation

    rows: list[dict[str, Any]] = []
    headline: dict[str, Any] = {}
    notes = [
        f"rule set: {source}; {len(kept)} rules in every engine"
        + (f" ({dropped} dropped: Python re cannot compile them)" if dropped else "")
    ]
    if alt is None:
        notes.append("re_alternation skipped: the rules do not compile as one Python regex")
    sizes = QUICK_PROMPT_SIZES if quick else PROMPT_SIZES
    for size in sizes:
        count = COUNTS.get(size, (200, 20))[1 if quick else 0]
        prompts = make_prompts(size, count)
        # Same answers: the native matcher and per-rule re agree on which rules match.
        sample = prompts[: min(len(prompts), 50)]
        agree = sum(native(t) == per_rule(t) for t in sample)
        results = {name: _measure(fn, prompts) for name, fn in engines.items()}
        results["native_batch"] = _measure_batch(matcher, prompts)
        nat = results["native"]
        for name, s in results.items():
            rows.append(
                {
                    "size": size_label(size),
                    "engine": name,
                    "prompts": s["n"],
                    "MB/s": s["mb_s"],
                    "MB/s at p50": s["mb_s_p50"],
                    "p50_ms": s["p50_ms"],
                    "p99_ms": s["p99_ms"],
                    "native speedup (MB/s ratio)": ratio(nat["mb_s"] or 0.0, s["mb_s"] or 0.0),
                    "agree (native vs re, sample)": f"{agree}/{len(sample)}",
                }
            )
        if size == 4096:
            headline["native_gbps_4kb"] = round((nat["mb_s"] or 0.0) / 1000.0, 4)
            headline["native_gbps_4kb_p50"] = round((nat["mb_s_p50"] or 0.0) / 1000.0, 4)
            headline["native_batch_gbps_4kb"] = round(
                (results["native_batch"]["mb_s"] or 0.0) / 1000.0, 4
            )
            headline["speedup_vs_re_per_rule_4kb"] = ratio(
                nat["mb_s"] or 0.0, results["re_per_rule"]["mb_s"] or 0.0
            )
            if "re_alternation" in results:
                headline["speedup_vs_re_alternation_4kb"] = ratio(
                    nat["mb_s"] or 0.0, results["re_alternation"]["mb_s"] or 0.0
                )
    gbps = headline.get("native_gbps_4kb")
    speed = headline.get("speedup_vs_re_per_rule_4kb")
    if gbps is not None:
        notes.append(
            f"targets at 4 KB: >=1 GB/s -> {gbps} GB/s ({'met' if gbps >= 1 else 'NOT met'}); "
            f">=50x per-rule re -> {speed}x ({'met' if speed and speed >= 50 else 'NOT met'})"
        )
    return suite_result(
        SUITE,
        baseline="Python re: per-rule search and one alternation, same rules, same prompts",
        rows=rows,
        headline=headline,
        notes=notes,
        raw={"rules": len(kept), "dropped": dropped, "source": source},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--rules", choices=("shipped", "fallback"), default="shipped", help="rule set to use"
    )
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "matcher.json"
    res = run(quick=args.quick, out_dir=out.parent, rules=args.rules)
    return finish(res, out)


if __name__ == "__main__":
    sys.exit(main())
