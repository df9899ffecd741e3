"""The CI red-team battery: the embedded default policy holds the floors in floors.yaml."""

from __future__ import annotations

import pytest

from infershield.redteam import DEFAULT_FLOORS, Report, run_suite
from infershield.redteam.report import check_floors, load_floors
from infershield.redteam.targets import PolicyTarget


def _run(policy: str) -> Report:
    target = PolicyTarget(policy, batch_size=16)
    try:
        return run_suite(target, "ci")
    finally:
        target.close()


@pytest.fixture(scope="module")
def default_report() -> Report:
    return _run("default")


def test_default_policy_holds_every_floor(default_report: Report) -> None:
    floors = load_floors(DEFAULT_FLOORS)
    assert len(floors["cells"]) >= 200  # every family x mutator cell of the ci suite
    problems = check_floors(default_report, floors)
    assert not problems, "\n".join(problems)


def test_default_policy_blocks_every_seed_unmutated(default_report: Report) -> None:
    assert default_report.missed_plain == []


def test_rules_judge_content_not_form() -> None:
    """Without the classifier, benign text under every counted form (spelled out,
    homoglyphs, zero-width, base64, ROT13, reversed, wrapped, framed) is allowed, and the
    mutated attacks are still caught."""
    report = _run("rules_only")
    rate, blocked, total = report.benign_rate()
    assert total > 250 and rate <= 0.01, (blocked, total)
    assert report.bypass()[0] <= 0.05
