"""Every check's options are validated where the config names them: an out-of-range value
is a ConfigError naming ``policy.<stage>[i].options.<field>``, never a traceback."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from infershield.checks.base import known_types, resolve
from infershield.config import CheckSpec, Config, OptionError, field_bounds
from infershield.errors import ConfigError
from infershield.policy import build_check


def _out_of_range(options_cls: type[Any]) -> tuple[str, Any]:
    """One (field, value) that the Options class must refuse."""
    for name, bounds in field_bounds(options_cls).items():
        if "ge" in bounds:
            return name, bounds["ge"] - 1
        if "gt" in bounds:
            return name, bounds["gt"]
        if "le" in bounds:
            return name, bounds["le"] + 1
        return name, bounds["lt"]
    hints = typing.get_type_hints(options_cls)
    for f in dataclasses.fields(options_cls):
        if typing.get_origin(hints[f.name]) is Literal:
            return f.name, "not-a-choice"
    for f in dataclasses.fields(options_cls):
        if typing.get_origin(hints[f.name]) is tuple:  # a list checked in __post_init__
            return f.name, ["<not a valid entry>"]
    raise AssertionError(f"{options_cls.__name__} has no option that can be out of range")


def _importable(type_name: str) -> bool:
    try:
        resolve(type_name)
    except ImportError:
        return False
    return True


# The shipped checks (tests elsewhere may register toy ones).
CHECKS = [
    t for t in known_types() if _importable(t) and resolve(t).__module__.startswith("infershield.")
]


def test_the_builtin_checks_are_covered() -> None:
    assert {
        "encoded_payload",
        "pii",
        "secrets",
        "classifier",
        "signatures",
        "ban_substrings",
    } <= set(CHECKS)


@pytest.mark.parametrize("type_name", CHECKS)
def test_out_of_range_option_names_the_field(type_name: str) -> None:
    cls = resolve(type_name)
    field, value = _out_of_range(cls.Options)
    stage = "input" if "input" in cls.stages else "output"
    spec = CheckSpec(type=type_name, options={field: value})
    with pytest.raises(ConfigError) as err:
        build_check(spec, stage, Config(), f"policy.{stage}[3]")  # type: ignore[arg-type]
    assert err.value.message.startswith(f"policy.{stage}[3].options.{field}: "), err.value.message


def test_a_registered_check_without_its_module_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infershield.checks import base

    monkeypatch.setitem(base._BUILTIN, "ghost", "infershield.checks.input.ghost:GhostCheck")
    with pytest.raises(ConfigError, match=r"policy\.input\[0\]\.type: .*unavailable"):
        build_check(CheckSpec(type="ghost"), "input", Config(), "policy.input[0]")


def test_bounds_message_and_direct_construction() -> None:
    from infershield.checks.input.encoded_payload import EncodedPayloadOptions

    spec = CheckSpec(type="encoded_payload", options={"min_blob_len": 2})
    with pytest.raises(ConfigError) as err:
        build_check(spec, "input", Config(), "policy.input[3]")
    assert err.value.message == "policy.input[3].options.min_blob_len: must be >= 4, got 2"
    with pytest.raises(OptionError) as direct:  # built in Python: still a ValueError
        EncodedPayloadOptions(min_blob_len=2)
    assert direct.value.field == "min_blob_len"


def test_check_constructor_option_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERSHIELD_REDACTION_KEY", raising=False)
    spec = CheckSpec(type="pii", options={"mode": "hash"})
    with pytest.raises(ConfigError, match=r"^policy\.output\[1\]\.options\.hash_key_env: "):
        build_check(spec, "output", Config(), "policy.output[1]")
    spec = CheckSpec(type="pii", options={"phone_regions": ["ZZ"]})
    with pytest.raises(ConfigError, match=r"^policy\.output\[1\]\.options\.phone_regions: "):
        build_check(spec, "output", Config(), "policy.output[1]")


def test_scan_cli_reports_an_out_of_range_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from infershield.cli import main

    cfg = tmp_path / "policy.yaml"
    cfg.write_text(
        "policy:\n  input:\n    - type: encoded_payload\n      options: {min_blob_len: 2}\n",
        encoding="utf-8",
    )
    rc = main(["scan", "--config", str(cfg), "hello"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "policy.input[0].options.min_blob_len: must be >= 4" in err
    assert "Traceback" not in err
