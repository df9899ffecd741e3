"""The check registry names only checks that exist: each type resolves and builds."""

from __future__ import annotations

import re

import pytest

from infershield.checks.base import Check, CheckContext, known_types, resolve
from infershield.config import CheckSpec, Config
from infershield.errors import ConfigError
from infershield.policy import build_check
from infershield.verdict import Status

#: Checks with no useful default: built without these options they must refuse, naming the
#: field, rather than screen nothing.
REQUIRED: dict[str, dict[str, object]] = {"ban_substrings": {"substrings": ["forbidden"]}}


@pytest.mark.parametrize("type_name", known_types())
def test_every_registered_type_resolves_and_builds_with_default_options(type_name: str) -> None:
    cls = resolve(type_name)
    assert issubclass(cls, Check)
    stage = cls.stages[0]
    where = f"policy.{stage}[0]"
    if type_name in REQUIRED:
        with pytest.raises(ConfigError, match=re.escape(where)):
            build_check(CheckSpec(type=type_name), stage, Config(), where)
    options = dict(REQUIRED.get(type_name, {}))
    # The default cache: the classifier builds the shipped model there once, then reuses it.
    check = build_check(CheckSpec(type=type_name, options=options), stage, Config(), where)
    try:
        verdict = check.check(CheckContext("What is the capital of France?", stage=stage))
        assert verdict.status is Status.OK
        assert verdict.check == check.name
    finally:
        check.close()


def test_the_registry_is_not_empty_and_has_the_input_checks() -> None:
    assert {"invalid_utf8", "length", "signatures", "classifier"} <= set(known_types())


def test_an_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        resolve("no_such_check")


def test_a_policy_naming_an_unregistered_check_fails_validation() -> None:
    # A type registered without a module let validation pass and the server die at start-up
    # with a raw ModuleNotFoundError; an unregistered type is a config error naming the field.
    from infershield.config import PolicyConfig, validate

    cfg = Config(policy=PolicyConfig(output=(CheckSpec(type="not_a_check"),)))
    with pytest.raises(ConfigError, match=re.escape("policy.output[0].type: unknown check")):
        validate(cfg)
