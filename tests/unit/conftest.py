"""Fixtures shared by unit tests of more than one module."""

from __future__ import annotations

from pathlib import Path

import pytest

from infershield.tokens import HFTokenCounter


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real word-level ``tokenizer.json`` built offline with ``tokenizers``."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]", "hello", "world", "one", "two", "three"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_truncation(4)  # must be disabled by the counter, or it would hide length
    d = tmp_path_factory.mktemp("model") / "1"
    d.mkdir()
    tok.save(str(d / "tokenizer.json"))
    return d / "tokenizer.json"


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path: Path) -> HFTokenCounter:
    return HFTokenCounter(tokenizer_path)
