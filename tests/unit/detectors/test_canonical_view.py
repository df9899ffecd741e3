"""The classifier judges the native normaliser's canonical view when there is one (content,
not form), and says which view it judged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tiny_model import build_tiny_classifier  # type: ignore[import-not-found]

from infershield.checks.base import CheckContext
from infershield.checks.input.classifier import ClassifierCheck, ClassifierOptions

FULLWIDTH = "w3 " + "".join(chr(ord(c) + 0xFEE0) for c in "jailbreak")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return build_tiny_classifier(tmp_path / "tiny", max_positions=16,
                                 meta={"threshold": 0.5})


def _check(model_dir: Path, canonical: bool = True) -> ClassifierCheck:
    return ClassifierCheck("classifier", ClassifierOptions(
        providers=("cpu",), canonical=canonical, prefilter="none"), model_dir)


def test_leetspeak_attack_is_caught_in_the_canonical_view(model_dir: Path) -> None:
    check = _check(model_dir)
    try:
        plain = check.check(CheckContext(text="inject"))
        leet = check.check(CheckContext(text="1nj3ct"))
        assert plain.blocked and dict(plain.details)["view"] == "original"
        assert leet.blocked and dict(leet.details)["view"] == "canonical"
        assert "canonical view" in leet.reason
        assert float(dict(leet.details)["original_score"]) < 0.5  # the raw form alone passes
        clean = check.check(CheckContext(text="Hello  World"))  # case and spacing only
        assert not clean.blocked and clean.details == ()
        texts = ["inject", "1nj3ct", "Hello  World", FULLWIDTH]
        batch = check.check_batch([CheckContext(text=t) for t in texts])
        single = [check.check(CheckContext(text=t)) for t in texts]
        assert [(v.blocked, v.details) for v in batch] == [(v.blocked, v.details)
                                                          for v in single]
        assert batch[3].blocked  # full-width letters folded
        got = asyncio.run(check.acheck(CheckContext(text="1nj3ct")))
        assert got.blocked and dict(got.details)["view"] == "canonical"
    finally:
        check.close()


def test_canonical_view_can_be_turned_off(model_dir: Path) -> None:
    check = _check(model_dir, canonical=False)
    try:
        assert not check.check(CheckContext(text="1nj3ct")).blocked
    finally:
        check.close()


def test_the_canonical_view_decides_when_there_is_one(model_dir: Path) -> None:
    """An odd form of harmless text is judged by what it says: the raw form scoring high
    does not block when its canonical view is benign."""
    check = _check(model_dir)
    try:
        verdict = check._verdict(0.99, 0.01)  # raw form high, canonical content benign
        assert not verdict.blocked
        assert dict(verdict.details) == {"view": "canonical", "original_score": "0.990"}
        assert check._verdict(0.01, 0.99).blocked  # a disguised attack
        assert check._verdict(0.99).blocked  # no canonical view: the text itself decides
    finally:
        check.close()
