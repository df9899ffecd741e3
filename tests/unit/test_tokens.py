"""Token counters: a real tokenizer.json, the byte fallback, counters per model."""

from __future__ import annotations

from pathlib import Path

import pytest

from infershield.tokens import ByteTokenCounter, HFTokenCounter, TokenCounters, find_tokenizer


def test_hf_counter_ignores_truncation_and_batches(tokenizer: HFTokenCounter) -> None:
    text = " ".join(["hello"] * 50)
    assert tokenizer.count(text) == 50
    assert tokenizer.count_batch([text, "one two", ""]) == [50, 2, 0]


def test_byte_fallback_never_undercounts() -> None:
    c = ByteTokenCounter()
    assert c.count("abc") == 3
    assert c.count("日本") == 6
    assert ByteTokenCounter(4).count("abcde") == 2
    with pytest.raises(ValueError):
        ByteTokenCounter(0)


def test_counters_per_model(tokenizer_path: Path, tmp_path: Path) -> None:
    model_dir = tokenizer_path.parent.parent
    assert find_tokenizer(model_dir) == tokenizer_path
    assert find_tokenizer(tmp_path) is None
    counters = TokenCounters()
    assert isinstance(counters.register_dir("m", model_dir), HFTokenCounter)
    assert counters.register_dir("plain", tmp_path) is counters.fallback
    assert counters.for_model("m").count("hello world") == 2
    assert counters.for_model("unknown").count("hello world") == 11
    assert counters.get("unknown") is None
    assert counters.get("m") is counters.for_model("m")


def test_bad_tokenizer_file_is_a_config_error(tmp_path: Path) -> None:
    from infershield.errors import ConfigError

    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load tokenizer"):
        HFTokenCounter(bad)
