"""Config errors say where the bad value came from: the file and line, or the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from infershield.config import load_config
from infershield.errors import ConfigError
from infershield.rules.packs import load_pack


@pytest.mark.parametrize(("text", "where"), [
    ("server: [\n", ":2:1: invalid YAML"),
    ("policy:\n  input:\n    - type: signatures\n   bad indent: 1\n", ":4:"),
    ("a: 'unterminated\n", ":2:1: invalid YAML"),
])
def test_yaml_errors_name_the_file_and_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={})
    assert exc.value.message.startswith(f"{path}:")
    assert where in exc.value.message
    assert "<unicode string>" not in exc.value.message


def test_a_rule_pack_yaml_error_names_the_pack_file(tmp_path: Path) -> None:
    path = tmp_path / "pack.yaml"
    path.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^rule pack {path}:2:1: invalid YAML"):
        load_pack(path)


@pytest.mark.parametrize(("var", "value", "field"), [
    ("INFERSHIELD_LIMITS__MAX_BATCH", "8", "limits.max_batch: unknown field"),
    ("INFERSHIELD_LIMITS__MAX_QUEUE", "lots", "limits.max_queue: expected an integer"),
    ("INFERSHIELD_LIMITS__MAX_QUEUE", "-1", "limits.max_queue: must not be negative"),
    ("INFERSHIELD_SERVER__LISTEN", "nowhere", "server.listen"),
])
def test_an_environment_error_names_the_variable(var: str, value: str, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={var: value, "INFERSHIELD_TELEMETRY__SAMPLE_RATIO": "0.5"})
    assert exc.value.message.startswith(f"{var}: {field}")


def test_a_file_error_is_not_blamed_on_an_unrelated_variable(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("limits: {max_queue: lots}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={"INFERSHIELD_LIMITS__MAX_CONCURRENCY": "4"})
    assert exc.value.message.startswith("limits.max_queue:")


def test_a_flag_that_overrides_the_variable_takes_the_blame() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"INFERSHIELD_SERVER__LISTEN": "127.0.0.1:9000"},
                    overrides={"server.listen": "nowhere"})
    assert exc.value.message.startswith("server.listen")
