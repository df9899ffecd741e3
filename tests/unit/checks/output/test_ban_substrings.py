"""The ``ban_substrings`` check: literal matching through the native core."""

from __future__ import annotations

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.output.ban_substrings import (
    BanSubstringsCheck,
    BanSubstringsOptions,
    literal_pattern,
)
from infershield.errors import ConfigError
from infershield.verdict import Decision


def test_literal_pattern_escapes_metacharacters() -> None:
    assert literal_pattern("a.b*(c)") == "a\\x2eb\\x2a\\x28c\\x29"


@pytest.mark.parametrize(
    ("text", "case_sensitive", "decision"),
    [
        ("the Project Falcon launch", False, Decision.BLOCK),
        ("the project falcon launch", True, Decision.ALLOW),
        ("price is $5.00 (net)", False, Decision.BLOCK),
        ("price is $5x00 (net)", False, Decision.ALLOW),
        ("ÜBER-GEHEIM stuff", False, Decision.BLOCK),
        ("nothing here", False, Decision.ALLOW),
    ],
)
def test_block(text: str, case_sensitive: bool, decision: Decision) -> None:
    chk = BanSubstringsCheck(
        "ban",
        BanSubstringsOptions(substrings=("Project Falcon", "$5.00 (net)", "über-geheim"),
                             case_sensitive=case_sensitive),
    )
    v = chk.check(CheckContext(text=text))
    assert v.decision is decision
    if decision is Decision.BLOCK:
        assert "banned" in v.categories and "Falcon" not in v.reason


def test_redact_non_ascii_and_overlaps() -> None:
    chk = BanSubstringsCheck(
        "ban", BanSubstringsOptions(substrings=("geheim", "heim"), action="redact")
    )
    v = chk.check(CheckContext(text="ä geheim ö heim"))
    assert v.decision is Decision.REDACT
    assert v.rewritten == "ä [REDACTED:banned] ö [REDACTED:banned]"


def test_empty_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="substrings"):
        BanSubstringsCheck("ban", BanSubstringsOptions())
