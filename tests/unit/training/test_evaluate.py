"""Choosing the prefilter's clearing cut."""

from __future__ import annotations

import numpy as np
import pytest

from infershield.training.evaluate import choose_prefilter_cut, window_keys

LABELS = ["injection"] * 10 + ["jailbreak"] * 2 + ["benign"] * 8
# Attack rows: fast scores 0.05..0.60; rows 10 and 11 are missed by the main model.
FAST = np.array([0.05, 0.10, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.01, 0.02,
                 0.0, 0.01, 0.02, 0.03, 0.04, 0.06, 0.2, 0.9], np.float32)
MAIN = np.array([0.9] * 10 + [0.1, 0.1] + [0.1] * 8, np.float32)


def test_zero_loss_keeps_every_caught_attack() -> None:
    cut = choose_prefilter_cut(FAST, MAIN, LABELS, threshold=0.8, max_loss=0.0)
    assert cut.clear_below == pytest.approx(0.05)
    assert (cut.caught, cut.lost) == (10, 0)
    assert cut.benign_cleared == pytest.approx(5 / 8)  # 0.0 .. 0.04
    assert cut.attacks_cleared == pytest.approx(2 / 12)  # the two the main model misses too


def test_the_loss_budget_is_a_share_of_the_caught_attacks() -> None:
    cut = choose_prefilter_cut(FAST, MAIN, LABELS, threshold=0.8, max_loss=0.2)
    assert cut.clear_below == pytest.approx(0.2)  # clears 0.05 and 0.10: 2 of 10
    assert cut.lost == 2
    assert cut.benign_cleared == pytest.approx(6 / 8)


def test_the_cut_never_exceeds_the_threshold() -> None:
    cut = choose_prefilter_cut(FAST, MAIN, LABELS, threshold=0.15, max_loss=0.5)
    assert cut.clear_below == pytest.approx(0.15)


def test_no_caught_attack_is_an_error() -> None:
    with pytest.raises(ValueError, match="catches none"):
        choose_prefilter_cut(FAST, np.zeros_like(MAIN), LABELS, threshold=0.5, max_loss=0.0)
    with pytest.raises(ValueError, match="max_loss"):
        choose_prefilter_cut(FAST, MAIN, LABELS, threshold=0.5, max_loss=1.0)


def test_window_keys_follow_the_windows_that_block() -> None:
    # text 0: main blocks in window 1 only; text 1: main never blocks; text 2: blocks in both.
    owner = np.array([0, 0, 1, 1, 2, 2])
    fast = np.array([0.9, 0.2, 0.05, 0.3, 0.4, 0.6], np.float32)
    main = np.array([0.1, 0.99, 0.2, 0.1, 0.97, 0.98], np.float32)
    keys = window_keys(fast, main, owner, 3, threshold=0.95)
    np.testing.assert_allclose(keys, [0.2, 0.3, 0.6])


def test_fold_runs_combined_and_policy() -> None:
    from infershield.training.evaluate import Scored, fold_runs

    lat = np.ones(3)
    model = Scored(np.array([0.2, 0.9, 0.1]), np.array([False, True, False]), lat)
    rules = Scored(np.array([0.4, 0.0, 0.95]), np.array([False, False, True]), lat)
    out = fold_runs(model, rules)
    np.testing.assert_allclose(out["combined"].scores, [0.4, 0.9, 0.95])
    # A weak rule match (0.4, not a block) does not lift the text on the operating curve.
    np.testing.assert_allclose(out["policy"].scores, [0.2, 0.9, 1.0])
    for run in out.values():
        assert run.blocked.tolist() == [False, True, True]
        np.testing.assert_allclose(run.latency_ms, 2.0)
