"""The classifier judges the native normaliser's canonical view when there is one (content,
not form), and says which view it judged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.input.classifier import ClassifierCheck, ClassifierOptions
from tiny_model import build_tiny_classifier  # type: ignore[import-not-found]

FULLWIDTH = "w3 " + "".join(chr(ord(c) + 0xFEE0) for c in "jailbreak")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return build_tiny_classifier(tmp_path / "tiny", max_positions=16,
                                 meta={"threshold": 0.5})


def _check(model_dir: Path, canonical: bool = True, units: bool = False) -> ClassifierCheck:
    return ClassifierCheck("classifier", ClassifierOptions(
        providers=("cpu",), canonical=canonical, prefilter="none", units=units), model_dir)


def _same_in_batch_single_and_async(check: ClassifierCheck,
                                    texts: list[str]) -> list[tuple[bool, Any]]:
    """``(blocked, details)`` of each text, asserted equal through ``check_batch``, ``check``
    and ``acheck``."""
    batch = check.check_batch([CheckContext(text=t) for t in texts])
    single = [check.check(CheckContext(text=t)) for t in texts]
    asynced = [asyncio.run(check.acheck(CheckContext(text=t))) for t in texts]
    want = [(v.blocked, v.details) for v in single]
    assert [(v.blocked, v.details) for v in batch] == want
    assert [(v.blocked, v.details) for v in asynced] == want
    return want


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


def test_structured_text_is_judged_by_its_content(model_dir: Path) -> None:
    check = _check(model_dir)
    try:
        plan = check._plan(CheckContext(text='{"id": 7, "body": "alpha beta inject"}'))
        assert plan.view == "content" and plan.texts[1] == "alpha beta inject"
        verdict = check.check(CheckContext(text='{"id": 7, "body": "alpha beta inject"}'))
        assert verdict.blocked and dict(verdict.details)["view"] == "content"
        assert "content view" in verdict.reason
        assert not check.check(CheckContext(text='{"id": 7, "body": "alpha beta gamma"}')).blocked
        # unwrapped, then leet folded
        got = check.check(CheckContext(text='{"id": 7, "body": ["gamma 1nj3ct"]}'))
        assert got.blocked and dict(got.details)["view"] == "content"
        html = "<div>\n<p>alpha beta</p>\n</div>"  # a page: judged by its text
        plan = check._plan(CheckContext(text=html))
        assert plan.view == "content" and plan.texts[1] == "alpha beta"
        md = "## alpha\n\n- beta"  # markdown is judged as written
        assert check._plan(CheckContext(text=md)).view == "original"
    finally:
        check.close()


def test_sentence_units_are_scored_with_a_stricter_cut(model_dir: Path) -> None:
    check = _check(model_dir, units=True)
    try:
        # threshold 0.5 (odds 1) -> unit cut at odds 2.5
        assert abs(check.unit_threshold - 2.5 / 3.5) < 1e-9
        plan = check._plan(CheckContext(text="one two three four. five six seven inject."))
        assert plan.view == "original"
        assert plan.texts[1:] == ["one two three four.", "five six seven inject."]
        hit = check._verdict(0.1, units=[0.2, 0.75])
        assert hit.blocked and "sentence unit 2 of 2" in hit.reason
        assert dict(hit.details)["unit"] == "1" and hit.score == 0.75
        miss = check._verdict(0.1, units=[0.2, 0.7])  # above 0.5, below the unit cut
        assert not miss.blocked and dict(miss.details)["unit_score"] == "0.700"
        texts = ["one two three four. five six seven inject.",
                 '{"a": "one two three four.\\nfive six seven eight."}',
                 "one two three four. five six seven eight.",
                 "1nj3ct one two three. four five six seven."]
        want = _same_in_batch_single_and_async(check, texts)
        assert want[0][0] and not want[2][0] and want[3][0]
    finally:
        check.close()


def test_unit_threshold_option_meta_and_bounds(tmp_path: Path) -> None:
    from infershield.errors import ConfigError

    meta_dir = build_tiny_classifier(tmp_path / "m", max_positions=16,
                                     meta={"threshold": 0.5, "unit_threshold": 0.8})
    opts = {"providers": ("cpu",), "prefilter": "none"}
    check = ClassifierCheck("c", ClassifierOptions(**opts), meta_dir)  # type: ignore[arg-type]
    assert check.unit_threshold == 0.8
    check.close()
    check = ClassifierCheck("c", ClassifierOptions(**opts, unit_threshold=0.6),  # type: ignore[arg-type]
                            meta_dir)
    assert check.unit_threshold == 0.6
    check.close()
    with pytest.raises(ConfigError, match="unit_threshold"):
        ClassifierCheck("c", ClassifierOptions(**opts, unit_threshold=0.4),  # type: ignore[arg-type]
                        meta_dir)


def test_units_and_content_can_be_turned_off(model_dir: Path) -> None:
    assert not ClassifierOptions().units  # off by default (cross-source false positives)
    check = ClassifierCheck("classifier", ClassifierOptions(
        providers=("cpu",), prefilter="none", units=False, content=False,
        canonical=False, frames=False), model_dir)
    try:
        plan = check._plan(CheckContext(text='{"a": "one two three four. five six seven eight."}'))
        assert plan.view == "original" and len(plan.texts) == 1
    finally:
        check.close()


def test_the_content_view_hides_no_word_of_the_document(model_dir: Path) -> None:
    """A repeated key (json.loads keeps only its last value) or an identifier-style key must
    not take an attack out of the view that decides."""
    check = _check(model_dir)
    try:
        for text in ('{"body": "alpha beta inject", "body": "alpha beta gamma"}',
                     '{"alpha_beta_gamma_inject": 1, "body": "alpha beta gamma"}'):
            verdict = check.check(CheckContext(text=text))
            assert verdict.blocked and dict(verdict.details)["view"] == "content", text
    finally:
        check.close()


def test_decoded_blobs_are_judged_on_their_own(model_dir: Path) -> None:
    import base64

    check = _check(model_dir)
    try:
        blob = base64.b64encode(b"alpha beta gamma inject delta").decode()
        text = f"one two three four five {blob} six"
        plan = check._plan(CheckContext(text=text))
        assert plan.decoded == ("base64",) and "alpha beta gamma inject delta" in plan.texts
        hit = check._verdict(0.1, 0.2, decoded=[("base64", 0.9)])
        assert hit.blocked and "decoded content (base64)" in hit.reason
        assert dict(hit.details)["decoded"] == "base64" and hit.score == 0.9
        miss = check._verdict(0.1, 0.2, decoded=[("hex", 0.3)])
        assert not miss.blocked and dict(miss.details)["decoded_score"] == "0.300"
        benign = base64.b64encode(b"alpha beta gamma delta epsilon").decode()
        texts = [text, f"one two three four {benign}", blob, "one two three four"]
        want = _same_in_batch_single_and_async(check, texts)
        assert want[0][0] and not want[1][0] and want[2][0]
        # a text that is one blob: its decoded text is the canonical view, scored once
        assert check._plan(CheckContext(text=blob)).decoded == ()
        short = base64.b64encode(b"alpha inject").decode()  # under four words: not a part
        assert check._plan(CheckContext(text=f"one {short}")).decoded == ()
    finally:
        check.close()
    off = ClassifierCheck("classifier", ClassifierOptions(
        providers=("cpu",), prefilter="none", decoded=False), model_dir)
    try:
        assert off._plan(CheckContext(text=text)).decoded == ()
    finally:
        off.close()


@pytest.mark.parametrize(("before", "after", "want"), [
    ("note: vtaber nyy ehyrf now", "note: ignore all rules now", "ignore all rules"),
    ("abc", "abc", ""),
    ("x .selur lla erongi", "x ignore all rules.", "ignore all rules."),
    ("", "hello world", "hello world"),
])
def test_changed_segment_is_what_decoding_rewrote(before: str, after: str, want: str) -> None:
    from infershield.checks.input.classifier import _changed_segment

    assert _changed_segment(before, after) == want


def test_an_html_page_is_judged_by_its_text_and_its_hidden_parts_alone(model_dir: Path) -> None:
    check = _check(model_dir)
    try:
        # The page's text is the judged view; the comment is also scored on its own, where
        # the visible words cannot dilute it.
        page = ("<div><p>one two three four five six seven eight nine ten eleven</p>"
                "<!-- alpha beta inject gamma --></div>")
        plan = check._plan(CheckContext(text=page))
        assert plan.view == "content" and plan.decoded == ("html_comment",)
        assert plan.texts[1:] == ["one two three four five six seven eight nine ten eleven\n"
                                  "alpha beta inject gamma", "alpha beta inject gamma"]
        benign = page.replace("inject", "delta")
        hidden_el = ('<p>one two three four five six seven eight nine ten eleven</p>'
                     '<span style="display:none">alpha beta inject gamma</span>')
        assert check._plan(CheckContext(text=hidden_el)).decoded == ("html_hidden",)
        want = _same_in_batch_single_and_async(check, [page, benign, hidden_el])
        # (The tiny model has no dilution: the view alone already blocks "inject".)
        assert want[0][0] and not want[1][0] and want[2][0]
        assert dict(want[0][1])["hidden_score"] == "0.994"
        assert float(dict(want[1][1])["hidden_score"]) < 0.5
        # A hidden part at the threshold blocks when the view does not, and says where.
        hit = check._verdict(0.1, 0.2, hidden=[("html_comment", 0.1), ("html_attribute", 0.9)])
        assert hit.blocked and hit.score == 0.9
        assert dict(hit.details)["hidden"] == "html_attribute"
        assert "hidden page text (html_attribute)" in hit.reason
        miss = check._verdict(0.1, 0.2, hidden=[("html_comment", 0.3)])
        assert not miss.blocked and dict(miss.details)["hidden_score"] == "0.300"
    finally:
        check.close()
    # Without the content view the page is judged as written.
    off = ClassifierCheck("classifier", ClassifierOptions(
        providers=("cpu",), prefilter="none", content=False), model_dir)
    try:
        plan = off._plan(CheckContext(text=page))
        assert plan.view == "original" and plan.decoded == ()
    finally:
        off.close()


def test_hidden_parts_past_the_cap_are_joined_never_dropped() -> None:
    from infershield.checks.input.classifier import MAX_HIDDEN_PARTS, _hidden_parts

    hidden = [("html_comment", f"comment number {i} of many") for i in range(40)]
    hidden.append(("html_comment", "alpha beta inject gamma"))
    parts = _hidden_parts(hidden, "the page", set())
    assert len(parts) == MAX_HIDDEN_PARTS
    assert "alpha beta inject gamma" in parts[-1][1]
    # A part that is the judged view itself, or one already scored, is not scored again.
    assert _hidden_parts([("html_comment", "The Page")], "the  page", set()) == []
    assert _hidden_parts([("html_comment", "one two three four")], "p",
                         {"one two three four"}) == []
