"""Where the matcher's time goes: per rule, per construct, and under a literal prefilter.

Three measurements on the matcher bench's 4 KB prompts (``bench.common.make_prompts``), with
the shipped signature packs, one thread, prompts pre-encoded (engine time only):

* ``rules``: every rule compiled alone in Hyperscan and timed; the costliest first.
* ``constructs``: the whole rule set recompiled with one flag or construct changed (caseless
  off, ``\\b`` removed, ...). These variants are *not* equivalent rules: they only show how
  much of the time each construct is responsible for.
* ``prefilter``: for each rule, a set of literals one of which every match must contain
  (taken from Python's regex parse tree, the longest such set); how many rules such an exact
  literal prefilter would wake per prompt, and what scanning the literals alone costs.

Run alone: ``python -m bench.profile_matcher [--prompts N] [--top N]``. It measures and
prints; it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bench.bench_matcher import common_rule_set, load_rule_set
from bench.common import make_prompts
from infershield.native import Matcher, Pattern

try:  # Python 3.11+
    import re._constants as _sc
    import re._parser as _sp
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants as _sc  # type: ignore[no-redef]
    import sre_parse as _sp  # type: ignore[no-redef]

#: Alternation sets larger than this are not expanded (they stop being a useful prefilter).
MAX_SET = 64
#: A prefilter literal shorter than this would wake on almost anything.
MIN_LITERAL = 3


def time_per_prompt(patterns: Sequence[Pattern], data: Sequence[bytes], reps: int = 5) -> float:
    """Best-of-``reps`` microseconds per prompt for one ``matched_indices_batch`` pass."""
    m = Matcher(patterns)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        m.matched_indices_batch(data)
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / max(len(data), 1)


# ---------------------------------------------------------------- required literals


def _score(s: set[str] | None) -> float:
    # The longest shortest member wins; among equals, the smaller set.
    if not s:
        return -1.0
    return min(len(x) for x in s) * 10.0 - len(s) * 0.1


def _best(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    return a if _score(a) >= _score(b) else b


def _cross(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    if a is None or b is None or len(a) * len(b) > MAX_SET:
        return None
    return {x + y for x in a for y in b}


def _seq(items: Sequence[tuple[Any, Any]]) -> tuple[set[str] | None, set[str] | None]:
    """(exact strings the sequence can match or None, a required literal set or None)."""
    required: set[str] | None = None
    run: set[str] | None = {""}
    exact: set[str] | None = {""}
    for op, av in items:
        e, r = _node(op, av)
        required = _best(required, r)
        joined = _cross(run, e)
        if joined is None:
            if run and run != {""}:
                required = _best(required, run)
            run = e if e is not None else {""}
        else:
            run = joined
        exact = _cross(exact, e)
    if run and run != {""}:
        required = _best(required, run)
    if required is not None and "" in required:
        required = None
    return exact, required


def _node(op: Any, av: Any) -> tuple[set[str] | None, set[str] | None]:
    if op == _sc.LITERAL:
        return {chr(av)}, {chr(av)}
    if op == _sc.AT:  # zero-width: \b, ^, $
        return {""}, None
    if op == _sc.SUBPATTERN:
        return _seq(list(av[-1]))
    if op == _sc.BRANCH:
        exact: set[str] | None = set()
        req: set[str] | None = set()
        for br in av[1]:
            e, r = _seq(list(br))
            exact = exact | e if exact is not None and e is not None else None
            alt = r if r is not None else (e if e is not None and "" not in e else None)
            req = req | alt if req is not None and alt is not None else None
        if exact is not None and len(exact) > MAX_SET:
            exact = None
        if req is not None and ("" in req or len(req) > MAX_SET):
            req = None
        return exact, req
    if op in (_sc.MAX_REPEAT, _sc.MIN_REPEAT, getattr(_sc, "POSSESSIVE_REPEAT", None)):
        lo, hi, body = av
        e, r = _seq(list(body))
        if lo == 0:
            return None, None
        if lo == hi == 1:
            return e, r
        return None, r if r is not None else (e if e is not None and "" not in e else None)
    return None, None


def required_literals(expression: str) -> list[str] | None:
    """Lower-cased literals, one of which every match of ``expression`` contains (or None
    when no useful set exists or Python cannot parse the expression)."""
    try:
        tree = _sp.parse(expression)
    except (re.error, OverflowError):
        return None
    exact, req = _seq(list(tree))
    if req is None and exact is not None and "" not in exact:
        req = exact
    if not req or min(len(x) for x in req) < MIN_LITERAL:
        return None
    return sorted({x.lower() for x in req})


def _literal_expression(s: str) -> str:
    return "".join(c if c.isalnum() else f"\\x{ord(c):02x}" if ord(c) < 128 else c for c in s)


# -------------------------------------------------------------------------- reports


def profile_rules(kept: Sequence[Pattern], data: Sequence[bytes], top: int) -> None:
    total = time_per_prompt(kept, data)
    print(f"all {len(kept)} rules, one database: {total:.1f} us per prompt")
    rows = sorted(((time_per_prompt([p], data), p) for p in kept), key=lambda r: -r[0])
    alone = sum(r[0] for r in rows)
    print(f"sum of every rule alone: {alone:.1f} us per prompt\n")
    print("| us/prompt alone | rule | expression (start) |\n|---|---|---|")
    for us, p in rows[:top]:
        print(f"| {us:.2f} | {p.id} | `{p.expression[:60]}` |")


def profile_constructs(kept: Sequence[Pattern], data: Sequence[bytes]) -> None:
    variants: list[tuple[str, Callable[[Pattern], Pattern]]] = [
        ("as shipped", lambda p: p),
        ("caseless off", lambda p: dataclasses.replace(p, caseless=False)),
        ("utf8 off", lambda p: dataclasses.replace(p, utf8=False)),
        ("dotall off", lambda p: dataclasses.replace(p, dotall=False)),
        (r"\b removed", lambda p: _sub(p, r"\b", "")),
        (r"(^|\W) removed", lambda p: _sub(p, r"(^|\W)", "")),
        (r"\W -> \s", lambda p: _sub(p, r"\W", r"\s")),
        (
            r"(\w+\W+){m,n} gaps removed",
            lambda p: dataclasses.replace(
                p, expression=re.sub(r"\(\\w\+\\[Ws]\+\)\{\d*,\d+\}\??", "", p.expression)
            ),
        ),
    ]
    print("\n| variant (not equivalent) | us/prompt |\n|---|---|")
    for name, f in variants:
        print(f"| {name} | {time_per_prompt([f(p) for p in kept], data):.1f} |")


def _sub(p: Pattern, old: str, new: str) -> Pattern:
    return dataclasses.replace(p, expression=p.expression.replace(old, new))


def profile_prefilter(kept: Sequence[Pattern], data: Sequence[bytes], top: int) -> None:
    lits: list[Pattern] = []
    owner: list[int] = []
    sets: dict[int, list[str]] = {}
    residual: list[int] = []
    for i, p in enumerate(kept):
        req = required_literals(p.expression)
        if req is None:
            residual.append(i)
            continue
        sets[i] = req
        for lit in req:
            # Caseless always (a superset under any inline flag); same UTF-8/UCP as the rule.
            lits.append(
                Pattern(
                    f"lit{len(lits)}",
                    _literal_expression(lit),
                    caseless=True,
                    dotall=False,
                    utf8=p.utf8,
                    ucp=p.ucp,
                )
            )
            owner.append(i)
    pre = Matcher(lits)
    woke = [{owner[k] for k in hit} for hit in pre.matched_indices_batch(data)]
    full = Matcher(kept).matched_indices_batch(data)
    unsound = sum(1 for w, f in zip(woke, full, strict=True) if not (f - set(residual)) <= w)
    mean = sum(map(len, woke)) / max(len(woke), 1)
    print(
        f"\nliteral prefilter: {len(sets)} rules with a required literal set "
        f"({len(lits)} literals), {len(residual)} without (always scanned)"
    )
    print(
        f"literals alone: {time_per_prompt(lits, data):.1f} us per prompt; "
        f"rules without a set alone: "
        f"{time_per_prompt([kept[i] for i in residual], data) if residual else 0.0:.1f} us"
    )
    print(
        f"rules woken per prompt: mean {mean:.1f} of {len(sets)}; prompts where a matching "
        f"rule was not woken (must be 0): {unsound}"
    )
    print("\n| prompts woken | rule | literals (first 6) |\n|---|---|---|")
    for i, n in Counter(i for w in woke for i in w).most_common(top):
        print(f"| {n}/{len(data)} | {kept[i].id} | {', '.join(sets[i][:6])} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200, help="4 KB prompts to scan")
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    parser.add_argument(
        "--only", choices=("rules", "constructs", "prefilter"), help="run one report"
    )
    args = parser.parse_args(argv)
    patterns, source = load_rule_set("shipped")
    kept, _ = common_rule_set(patterns)
    data = [t.encode("utf-8") for t in make_prompts(4096, args.prompts)]
    print(f"{source}: {len(kept)} rules; {len(data)} prompts of 4 KB\n")
    if args.only in (None, "rules"):
        profile_rules(kept, data, args.top)
    if args.only in (None, "constructs"):
        profile_constructs(kept, data)
    if args.only in (None, "prefilter"):
        profile_prefilter(kept, data, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
