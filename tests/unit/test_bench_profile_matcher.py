"""The matcher profiler's required-literal extraction is sound on the shipped packs."""

from __future__ import annotations

import pytest
from bench.bench_matcher import common_rule_set, load_rule_set
from bench.profile_matcher import required_literals

from infershield.checks.input.signatures import DEFAULT_PACKS
from infershield.native import Matcher, analyze
from infershield.rules.engine import text_views
from infershield.rules.packs import load_packs


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (r"\bignore\s+(all\s+)?previous\s+instructions", ["instructions"]),
        (r"(foo|barbaz)\s+qux", ["qux"]),  # the smaller set among equally short ones
        (r"(foo|barbaz)\s+q", ["barbaz", "foo"]),
        (r"(ab)?c", None),  # nothing of 3+ characters is required
        (r"x{0,3}y", None),
    ],
)
def test_required_literals_small_cases(expression: str, expected: list[str] | None) -> None:
    assert required_literals(expression) == expected


def test_every_match_contains_a_required_literal() -> None:
    # Soundness, with Hyperscan as the oracle: wherever a rule matches one of its examples'
    # views (raw, normalised, decoded), that view contains one of the rule's literals, or the
    # prefilter the profiler models would miss a real match.
    checked = 0
    for rule in load_packs(DEFAULT_PACKS):
        lits = required_literals(rule.pattern)
        if lits is None:
            continue
        matcher = Matcher([rule.to_pattern()])
        for example in (*rule.match_examples, *rule.no_match_examples):
            views = text_views(example, analyze(example), normalized=True, decoded=True)
            for view in views:
                if matcher.matched_indices(view):
                    assert any(lit in view.lower() for lit in lits), (rule.id, view, lits[:6])
                    checked += 1
    assert checked > 100


def test_bench_rule_set_is_the_shipped_packs() -> None:
    patterns, source = load_rule_set("shipped")
    kept, _ = common_rule_set(patterns)
    assert "shipped packs" in source
    assert len(kept) == len(patterns)
