"""The rule-pack loader, its validation errors, and ``infershield rules check``."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from infershield.errors import ConfigError
from infershield.rules.cli import cmd_check
from infershield.rules.packs import load_pack, load_packs, pack_hash, shipped_packs

GOOD_RULE = """
  - id: mine.hello
    category: injection
    severity: high
    pattern: 'hello\\s+world'
    examples: {match: [hello world], no_match: [goodbye world]}
"""


def write_pack(tmp_path: Path, body: str, name: str = "mine") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"pack: {name}\nrules:\n{body}", encoding="utf-8")
    return p


def test_shipped_packs_cover_the_families() -> None:
    names = set(shipped_packs())
    assert {"injection", "jailbreak", "exfiltration", "obfuscation", "multilingual",
            "delimiters", "discussion", "pii", "secrets"} <= names
    rules = load_packs(sorted(names))
    assert len({r.id for r in rules}) == len(rules)
    cats = {r.category for r in rules}
    assert {"injection", "jailbreak", "exfiltration", "obfuscation", "template_injection",
            "pii", "secret"} <= cats
    for r in rules:
        assert r.match_examples and r.no_match_examples, r.id


def test_multilingual_covers_at_least_five_languages() -> None:
    ids = {r.id for r in load_pack("multilingual").rules}
    langs = {i.rsplit("_", 1)[-1] for i in ids if i.startswith("multilingual.override_")}
    assert len(langs) >= 5, langs


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (GOOD_RULE.replace("severity: high", "severity: urgent"), "mine.hello: severity"),
        (GOOD_RULE.replace("category: injection", "category: spam"), "mine.hello: category"),
        (GOOD_RULE.replace("examples: {match: [hello world], no_match: [goodbye world]}",
                           "examples: {match: [hello world]}"), "mine.hello: examples.no_match"),
        (GOOD_RULE.replace("pattern: 'hello\\s+world'", "pattern: ''"), "mine.hello: pattern"),
        (GOOD_RULE + "    flags: [turbo]\n", "mine.hello: unknown flag"),
        (GOOD_RULE + "    colour: red\n", "mine.hello: unknown field"),
        (GOOD_RULE.replace("id: mine.hello", "id: Hello"), "id must look like"),
        (GOOD_RULE + GOOD_RULE, "mine.hello: duplicate id"),
        (GOOD_RULE + "    scope: paragraph\n", "mine.hello: scope must be one of"),
        (GOOD_RULE + "    scope: match\n", "mine.hello: only discussion rules have a scope"),
        (GOOD_RULE + "    quotable: 'no'\n", "mine.hello: quotable must be true or false"),
    ],
)
def test_bad_pack_is_a_config_error_naming_file_and_rule(
    tmp_path: Path, body: str, fragment: str
) -> None:
    p = write_pack(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_pack(str(p))
    assert str(p) in err.value.message
    assert fragment in err.value.message


def test_unknown_pack_name_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown rule pack 'nope'"):
        load_pack("nope")
    with pytest.raises(ConfigError, match="no such file"):
        load_pack(str(tmp_path / "absent.yaml"))


def test_ids_must_be_unique_across_packs(tmp_path: Path) -> None:
    a = write_pack(tmp_path, GOOD_RULE, "first")
    b = write_pack(tmp_path, GOOD_RULE, "second")
    with pytest.raises(ConfigError, match=r"mine\.hello: duplicate id"):
        load_packs([str(a), str(b)])


def test_pack_hash_tracks_patterns_and_flags(tmp_path: Path) -> None:
    rules = load_pack("injection").rules
    assert pack_hash(rules) == pack_hash(load_pack("injection").rules)
    changed = write_pack(tmp_path, GOOD_RULE.replace("world", "there"))
    assert pack_hash(load_pack(str(write_pack(tmp_path, GOOD_RULE, "x"))).rules) != pack_hash(
        load_pack(str(changed)).rules
    )


def test_rules_check_passes_on_every_shipped_pack() -> None:
    out = io.StringIO()
    rc = cmd_check(argparse.Namespace(packs=[]), stdout=out)
    assert rc == 0, out.getvalue()
    assert "all examples pass" in out.getvalue()


@pytest.mark.parametrize(
    ("examples", "expected"),
    [
        ("{match: [goodbye], no_match: [nothing]}", "mine.hello: missed a match example"),
        ("{match: [hello world], no_match: [HELLO   WORLD]}", "mine.hello: matched a no_match"),
    ],
)
def test_rules_check_names_the_failing_rule(tmp_path: Path, examples: str, expected: str) -> None:
    body = GOOD_RULE.replace("{match: [hello world], no_match: [goodbye world]}", examples)
    p = write_pack(tmp_path, body)
    out = io.StringIO()
    assert cmd_check(argparse.Namespace(packs=[str(p)]), stdout=out) == 1
    assert expected in out.getvalue()


def test_rules_check_reports_an_uncompilable_pattern(tmp_path: Path) -> None:
    p = write_pack(tmp_path, GOOD_RULE.replace("hello\\s+world", "(a)\\1"))
    with pytest.raises(ConfigError, match=r"mine\.hello"):
        cmd_check(argparse.Namespace(packs=[str(p)]), stdout=io.StringIO())


def test_rules_check_via_main(capsys: pytest.CaptureFixture[str]) -> None:
    from infershield.cli import main

    assert main(["rules", "check", "injection", "pii"]) == 0
    assert "2 pack(s)" in capsys.readouterr().out
