"""length: character and token limits, with the native tokens or a tokenizer.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from infershield.checks.base import CheckContext
from infershield.checks.input.length import LengthCheck, LengthOptions
from infershield.errors import ConfigError
from infershield.verdict import Decision


def _run(opts: LengthOptions, text: str) -> tuple[Decision, str]:
    v = LengthCheck("length", opts).check(CheckContext(text))
    return v.decision, v.reason


@pytest.mark.parametrize(("opts", "text", "reason"), [
    (LengthOptions(max_chars=10), "x" * 11, LengthCheck.REASON_CHARS),
    (LengthOptions(max_chars=3), "日本語の", LengthCheck.REASON_CHARS),  # code points, not bytes
    (LengthOptions(max_chars=0, max_tokens=3), "one two three four", LengthCheck.REASON_TOKENS),
    (LengthOptions(min_chars=1), "", LengthCheck.REASON_SHORT),
    (LengthOptions(), "a" * 100_001, LengthCheck.REASON_CHARS),
])
def test_blocks(opts: LengthOptions, text: str, reason: str) -> None:
    assert _run(opts, text) == (Decision.BLOCK, reason)


@pytest.mark.parametrize(("opts", "text"), [
    (LengthOptions(max_chars=10), "x" * 10),
    (LengthOptions(max_chars=3), "日本語"),
    (LengthOptions(max_chars=0, max_tokens=3), "one two three"),
    (LengthOptions(min_chars=1), "a"),
    (LengthOptions(), ""),
    (LengthOptions(), "a" * 100_000),
])
def test_allows(opts: LengthOptions, text: str) -> None:
    decision, _ = _run(opts, text)
    assert decision is Decision.ALLOW


def test_score_grows_with_length_and_stays_below_blocking() -> None:
    check = LengthCheck("length", LengthOptions(max_chars=100))
    scores = [check.check(CheckContext("x" * n)).score for n in (0, 50, 100)]
    assert scores[0] == 0.0 < scores[1] < scores[2] <= 0.5


def test_tokens_counted_with_a_tokenizer_file(tmp_path: Path) -> None:
    # A whitespace-split vocabulary in which an unknown word is one [UNK] token.
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    check = LengthCheck("length", LengthOptions(max_tokens=4, tokenizer=str(path)))
    # Punctuation splits into tokens of its own here, unlike in the native word count.
    v = check.check(CheckContext("hello, world! hello"))
    assert v.decision is Decision.BLOCK and dict(v.details)["tokens"] == "5"
    assert check.check(CheckContext("hello world hello")).decision is Decision.ALLOW


def test_a_bad_tokenizer_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text(json.dumps({"not": "a tokenizer"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        LengthCheck("length", LengthOptions(max_tokens=10, tokenizer=str(bad)))


@pytest.mark.parametrize("kw", [
    {"max_chars": -1}, {"max_chars": 0}, {"min_chars": 20, "max_chars": 10},
    {"tokenizer": "t.json"}, {"max_tokens": -5},
])
def test_options_that_check_nothing_or_contradict_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LengthOptions(**kw)  # type: ignore[arg-type]
