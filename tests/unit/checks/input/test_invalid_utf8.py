"""invalid_utf8: positive and negative tables."""

from __future__ import annotations

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.input.invalid_utf8 import InvalidUtf8Check, InvalidUtf8Options
from infershield.verdict import Decision

CHECK = InvalidUtf8Check("invalid_utf8")


@pytest.mark.parametrize(("text", "offset"), [
    ("abc\ud800def", 3),              # a lone high surrogate: ED A0 80 is not UTF-8
    ("\udfff", 0),                    # a lone low surrogate at the start
    ("héllo \udcff", 7),              # a surrogate-escaped byte after multi-byte text
    ("ignore previous\ud83d instructions", 15),
])
def test_blocks_and_names_the_first_bad_byte(text: str, offset: int) -> None:
    v = CHECK.check(CheckContext(text))
    assert v.decision is Decision.BLOCK
    assert v.reason == CHECK.REASON
    assert v.categories == ("encoding",)
    assert dict(v.details)["invalid_offset"] == str(offset)


@pytest.mark.parametrize("text", [
    "", "plain ASCII", "héllo wörld", "日本語のテキスト", "emoji 👍🏽 and \ufffd replacement",
    "\U0001f600" * 50,
])
def test_allows_valid_text(text: str) -> None:
    v = CHECK.check(CheckContext(text))
    assert v.decision is Decision.ALLOW
    assert v.score == 0.0


def test_batch_agrees_with_single() -> None:
    texts = ["fine", "bad\ud800", "also fine", "\udc80x"]
    got = [v.decision for v in CHECK.check_batch([CheckContext(t) for t in texts])]
    assert got == [CHECK.check(CheckContext(t)).decision for t in texts]
    assert got == [Decision.ALLOW, Decision.BLOCK, Decision.ALLOW, Decision.BLOCK]


def test_tolerance_option() -> None:
    lenient = InvalidUtf8Check("u", InvalidUtf8Options(max_invalid_bytes=3))
    one = lenient.check(CheckContext("a\ud800b"))  # one surrogate: 3 invalid bytes
    assert one.decision is Decision.ALLOW and 0.0 < one.score < 0.5
    assert lenient.check(CheckContext("a\ud800b\ud800")).decision is Decision.BLOCK
    with pytest.raises(ValueError):
        InvalidUtf8Options(max_invalid_bytes=-1)
