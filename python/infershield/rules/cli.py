"""``infershield rules check|list``: compile the packs and test every rule's examples."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from infershield.rules.packs import RulePack, load_pack, load_packs, shipped_packs


def register(subparsers: Any) -> None:
    """Add the ``rules`` command group to the top-level parser."""
    rules = subparsers.add_parser("rules", help="rule packs: check examples, list rules")
    sub = rules.add_subparsers(dest="rules_command", required=True)
    chk = sub.add_parser("check", help="compile packs and run every rule's examples")
    chk.add_argument("packs", nargs="*", help="pack names or YAML paths (default: all shipped)")
    chk.set_defaults(func=cmd_check)
    lst = sub.add_parser("list", help="list the rules of packs")
    lst.add_argument("packs", nargs="*", help="pack names or YAML paths (default: all shipped)")
    lst.set_defaults(func=cmd_list)


def check_pack(pack: RulePack) -> list[str]:
    """Compile one pack and test its examples; return one message per failure."""
    if pack.mode == "span":
        return _check_span_pack(pack)
    return _check_signature_pack(pack)


def _check_signature_pack(pack: RulePack) -> list[str]:
    from infershield.native import analyze
    from infershield.rules.engine import SignatureEngine

    engine = SignatureEngine(pack.rules)
    texts, expect = _examples(pack)
    matched = engine.matched_batch(texts, [analyze(t) for t in texts])
    return _failures(pack, texts, expect, matched)


def _check_span_pack(pack: RulePack) -> list[str]:
    from infershield.rules.spans import SpanDetector

    detector = SpanDetector(pack.rules)
    texts, expect = _examples(pack)
    index = {r.id: i for i, r in enumerate(pack.rules)}
    found = detector.find_batch(texts)
    matched = [{index[f.rule_id] for f in fs} for fs in found]
    return _failures(pack, texts, expect, matched)


def _examples(pack: RulePack) -> tuple[list[str], list[tuple[int, bool]]]:
    """Every example text of the pack, with (rule index, should match) for each."""
    texts: list[str] = []
    expect: list[tuple[int, bool]] = []
    for i, rule in enumerate(pack.rules):
        for t in rule.match_examples:
            texts.append(t)
            expect.append((i, True))
        for t in rule.no_match_examples:
            texts.append(t)
            expect.append((i, False))
    return texts, expect


def _failures(
    pack: RulePack, texts: list[str], expect: list[tuple[int, bool]], matched: list[set[int]]
) -> list[str]:
    out: list[str] = []
    for text, (i, should), got in zip(texts, expect, matched, strict=True):
        rule = pack.rules[i]
        if should and i not in got:
            out.append(f"{rule.id}: missed a match example: {text!r}")
        elif not should and i in got:
            out.append(f"{rule.id}: matched a no_match example: {text!r}")
    return out


def cmd_check(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Exit 0 when every example of every pack behaves; 1 naming each failing rule."""
    stdout = stdout or sys.stdout
    names: Sequence[str] = args.packs or shipped_packs()
    load_packs(names)  # rule ids must be unique across the packs checked together
    failures: list[str] = []
    n_rules = 0
    for name in names:
        pack = load_pack(name)
        n_rules += len(pack.rules)
        problems = check_pack(pack)
        failures.extend(problems)
        status = "ok" if not problems else f"{len(problems)} failure(s)"
        stdout.write(f"{pack.name}: {len(pack.rules)} rules, {status}\n")
    for f in failures:
        stdout.write(f"FAIL {f}\n")
    stdout.write(
        f"{len(names)} pack(s), {n_rules} rules: "
        + ("all examples pass\n" if not failures else f"{len(failures)} failure(s)\n")
    )
    return 1 if failures else 0


def cmd_list(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Print one line per rule: id, category, severity, pack."""
    stdout = stdout or sys.stdout
    for name in args.packs or shipped_packs():
        pack = load_pack(name)
        for r in pack.rules:
            stdout.write(f"{r.id}\t{r.category}\t{r.severity}\t{pack.name}\n")
    return 0
