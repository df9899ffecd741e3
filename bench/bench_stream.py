"""Streamed output screening: what the firewall adds per response of a token stream.

A decoupled model streams its reply a few tokens per response. The firewall screens each
response as part of the whole reply (:class:`infershield.stream.StreamScreener`: look-back
plus pending text, one pipeline run per response once the hold-back is full). This bench
feeds replies through the shipped default output pipeline (``secrets``, ``pii``,
``exfil_links`` and the ``prompt_leak`` the policy adds) in chunks of 1, 4 and 16 tokens
(a token here is one whitespace-separated word), and times each chunk:

* ``stream``: the stream screener, i.e. the time added to each response;
* ``stream + system prompt``: the same with a system prompt to guard (longer hold-back);
* baseline ``per response``: each chunk screened on its own, as before this screener (which
  misses anything split across responses), in the same run.

Measured, never asserted. Run alone: ``python -m bench.bench_stream [--quick] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, finish, make_prompts, ratio, suite_result, summarize

SUITE = "stream"
CHUNK_TOKENS: tuple[int, ...] = (1, 4, 16)
SYSTEM = (
    "You are HelpBot for Contoso Travel. Never reveal the discount code or the names of our "
    "partner hotels, and always answer in a friendly, concise tone. Refuse unrelated tasks."
)


def _chunks(text: str, tokens: int) -> list[str]:
    words = text.split(" ")
    pieces = [w + " " for w in words[:-1]] + [words[-1]]
    return ["".join(pieces[i : i + tokens]) for i in range(0, len(pieces), tokens)]


def run(*, quick: bool = False, out_dir: Path | None = None, **_: Any) -> dict[str, Any]:
    """Time the stream screener per chunk against per-response screening."""
    import time

    try:
        from infershield.checks.base import CheckContext
        from infershield.config import load_config
        from infershield.pipeline import PipelineResult
        from infershield.policy import build_pipeline, output_specs
        from infershield.stream import StreamScreener, derive_holdback
    except ImportError as exc:
        return suite_result(SUITE, status="skipped", reason=f"infershield not importable: {exc}")

    cfg = load_config(None, env={})
    pipe = build_pipeline(output_specs(cfg), "output", cfg, fail_fast=cfg.policy.fail_fast)
    holdback = derive_holdback(c.max_match_chars() for c in pipe.checks)
    leak_hb = max(holdback, *(getattr(c, "span_chars", lambda _: 0)(SYSTEM) for c in pipe.checks))
    # Replies: everyday text of about 2 KB, some with an e-mail address or a key in them.
    replies = make_prompts(2048, 4 if quick else 24, attack_rate=0.0, seed=11)
    replies = [
        r.replace(" ", " write to jane.doe@example.org ", 1) if i % 3 == 0 else r
        for i, r in enumerate(replies)
    ]
    rows: list[dict[str, Any]] = []
    notes: list[str] = [f"hold-back {holdback} chars ({leak_hb} with the system prompt)"]
    try:
        for tokens in CHUNK_TOKENS:
            samples: dict[str, list[float]] = {
                "per response (baseline)": [], "stream": [], "stream + system prompt": []
            }
            for reply in replies:
                chunks = _chunks(reply, tokens)
                for c in chunks:
                    t0 = time.perf_counter()
                    pipe.run(CheckContext(c, stage="output"))
                    samples["per response (baseline)"].append((time.perf_counter() - t0) * 1e3)
                for label, system, hb in (
                    ("stream", "", holdback),
                    ("stream + system prompt", SYSTEM, leak_hb),
                ):
                    sc = StreamScreener(hb)

                    def screen(t: str, system: str = system) -> PipelineResult:
                        return pipe.run(CheckContext(t, stage="output", system_prompt=system))

                    for i, c in enumerate(chunks):
                        t0 = time.perf_counter()
                        sc.feed(c, screen, final=i == len(chunks) - 1)
                        samples[label].append((time.perf_counter() - t0) * 1e3)
            base = summarize(samples["per response (baseline)"])
            for label, xs in samples.items():
                s = summarize(xs)
                rows.append(
                    {
                        "chunk_tokens": tokens,
                        "mode": label,
                        "chunks": s["n"],
                        "p50_ms": s["p50_ms"],
                        "p99_ms": s["p99_ms"],
                        "mean_ms": s["mean_ms"],
                        "p50_vs_baseline": ratio(s["p50_ms"], base["p50_ms"]),
                    }
                )
    finally:
        pipe.close()
    headline = {
        f"stream_{r['chunk_tokens']}tok_p{q}_ms": r[f"p{q}_ms"]
        for r in rows
        if r["mode"] == "stream"
        for q in (50, 99)
    }
    return suite_result(
        SUITE,
        baseline="each response screened on its own (misses splits), same run",
        rows=rows,
        headline=headline,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts (a smoke run)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    out = args.json or RESULTS_DIR / "stream.json"
    return finish(run(quick=args.quick, out_dir=out.parent), out)


if __name__ == "__main__":
    sys.exit(main())
