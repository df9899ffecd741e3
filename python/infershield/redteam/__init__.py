"""``infershield redteam``: mutated attacks and a benign battery against a firewall.

Seed attacks by family (``seeds/attacks.yaml``) and benign seeds (``seeds/benign.yaml``) are
rewritten by deterministic mutators (:mod:`infershield.redteam.mutators`), sent to a target
(a policy run in-process, or any Triton/KServe-v2 gRPC endpoint) and summed up in a
:class:`~infershield.redteam.report.Report`: catch rate per family x mutator, bypass by
mutator family, the benign false-positive rate, latency, and the floors CI holds them to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from infershield.redteam.battery import SUITE_SEED, Case, Seed, build_cases, load_suite
from infershield.redteam.report import Report
from infershield.redteam.targets import Target

__all__ = ["DEFAULT_FLOORS", "Report", "run_suite"]

#: The floors `make test` holds the default policy to (suite ``ci``).
DEFAULT_FLOORS = Path(__file__).with_name("floors.yaml")


def run_suite(
    target: Target,
    suite: str,
    *,
    seed: int = SUITE_SEED,
    chunk: int = 64,
    progress: Callable[[int, int], None] | None = None,
    attacks: tuple[Seed, ...] | None = None,
) -> Report:
    """Build the suite's cases (``attacks`` replaces the shipped attack seeds), send them to
    ``target`` and return the report."""
    cases: list[Case] = build_cases(load_suite(suite), seed=seed, attacks_from=attacks)
    outcomes = []
    for i in range(0, len(cases), chunk):
        outcomes.extend(target.screen([c.text for c in cases[i : i + chunk]]))
        if progress is not None:
            progress(len(outcomes), len(cases))
    return Report(target.description, suite, cases, outcomes)
