"""Fuzzing config parsing: arbitrary YAML-ish data and text raise ConfigError and nothing else.

The short runs are part of ``make test`` (a few hundred examples, seconds). ``make fuzz``
sets ``INFERSHIELD_FUZZ_EXAMPLES`` and runs the ``slow`` variants with that many examples.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infershield.config import Config, build, env_overrides, load_config, validate
from infershield.errors import ConfigError

SHORT = 300
LONG = int(os.environ.get("INFERSHIELD_FUZZ_EXAMPLES", "0"))
long_only = pytest.mark.skipif(LONG <= 0, reason="set INFERSHIELD_FUZZ_EXAMPLES (make fuzz)")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),  # past float range
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        ["127.0.0.1:8001", "host:99999", ":1", "h:²", "block", "allow", "json", "local"]
    ),
)
yamlish = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def shaped(cls: type[Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Mappings that mostly use ``cls``'s real field names, so fuzzing gets past the
    unknown-key check into the type coercion and the cross-field validation."""
    hints = typing.get_type_hints(cls)
    field_values: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = _strategy_for(tp, depth)
        field_values[f.name] = st.one_of(inner, yamlish)
    keys = st.sampled_from(sorted(field_values))
    entry = keys.flatmap(lambda k: st.tuples(st.just(k), field_values[k]))
    known = st.lists(entry, max_size=len(field_values)).map(dict)
    return st.one_of(known, known, yamlish)


def _strategy_for(tp: Any, depth: int) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and depth < 3:
        return shaped(tp, depth + 1)
    if origin in (tuple, list) and args and dataclasses.is_dataclass(args[0]) and depth < 3:
        return st.lists(shaped(args[0], depth + 1), max_size=3)
    if origin is typing.Literal:
        return st.sampled_from(args)
    return scalars


config_data = shaped(Config)


def _only_config_errors(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except ConfigError as exc:
        assert exc.message  # every rejection explains itself


def check_build(data: Any) -> None:
    def go() -> None:
        cfg = build(Config, data)
        validate(cfg)

    _only_config_errors(go)


def check_load_text(tmp_path: Path, text: str) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    _only_config_errors(lambda: load_config(p, env={}))


def check_env(env: dict[str, str]) -> None:
    def go() -> None:
        cfg = build(Config, env_overrides(env))
        validate(cfg)

    _only_config_errors(go)


env_data = st.dictionaries(
    st.builds(
        lambda parts: "INFERSHIELD_" + "__".join(parts),
        st.lists(
            st.sampled_from(["SERVER", "LISTEN", "LIMITS", "DEADLINE_S", "POLICY", "INPUT", "X"]),
            min_size=1,
            max_size=3,
        ),
    ),
    st.text(max_size=20)
    | st.sampled_from(["1e999", "-1", "nan", ".inf", "[1, 2]", "{a: 1}", "true", "~"]),
    max_size=4,
)
yaml_text = st.one_of(
    st.text(max_size=200),
    config_data.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
)


@settings(FUZZ, max_examples=SHORT)
@given(config_data)
def test_fuzz_config_build(data: Any) -> None:
    check_build(data)


@settings(FUZZ, max_examples=SHORT // 2)
@given(yaml_text)
def test_fuzz_config_load_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    check_load_text(tmp_path_factory.mktemp("fuzz"), text)


@settings(FUZZ, max_examples=SHORT // 2)
@given(env_data)
def test_fuzz_config_env(env: dict[str, str]) -> None:
    check_env(env)


@pytest.mark.slow
@long_only
@settings(FUZZ, max_examples=max(LONG, 1))
@given(config_data)
def test_fuzz_config_build_long(data: Any) -> None:
    check_build(data)


@pytest.mark.slow
@long_only
@settings(FUZZ, max_examples=max(LONG // 4, 1))
@given(yaml_text)
def test_fuzz_config_load_text_long(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    check_load_text(tmp_path_factory.mktemp("fuzz"), text)


@pytest.mark.slow
@long_only
@settings(FUZZ, max_examples=max(LONG // 4, 1))
@given(env_data)
def test_fuzz_config_env_long(env: dict[str, str]) -> None:
    check_env(env)


@pytest.mark.parametrize(
    "data",
    [
        {"limits": {"deadline_s": 10**400}},
        {"limits": {"deadline_s": float("nan")}},
        {"limits": {"deadline_s": float("inf")}},
        {"server": {"listen": "127.0.0.1:²"}},
        {"limits": {"max_queue": -1}},
        {"backend": {"workers": 0}},
    ],
)
def test_found_by_fuzzing_are_config_errors(data: dict[str, Any]) -> None:
    """Regressions: each of these once escaped as a non-ConfigError or passed validation."""
    with pytest.raises(ConfigError):
        validate(build(Config, data))
