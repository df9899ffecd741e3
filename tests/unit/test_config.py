from pathlib import Path

import pytest

from infershield.config import (
    Config,
    LimitsConfig,
    build,
    default_policy_path,
    env_overrides,
    load_config,
)
from infershield.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_default_policy_loads() -> None:
    cfg = load_config(env={})
    assert default_policy_path().exists()
    assert cfg.server.listen == "127.0.0.1:8001"
    assert cfg.backend.kind == "local"
    assert cfg.policy.input, "the default policy screens input"


def test_safe_limits_are_on_without_config() -> None:
    lim = LimitsConfig()
    assert lim.max_text_bytes < 64 * 1024 * 1024
    assert lim.max_concurrency > 0 and lim.deadline_s > 0


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    p = write(tmp_path, "server: {listen: '127.0.0.1:1000'}\nlimits: {max_batch_elements: 3}\n")
    env = {"INFERSHIELD_SERVER__LISTEN": "127.0.0.1:2000", "INFERSHIELD_LIMITS__DEADLINE_S": "5"}
    cfg = load_config(p, env=env)
    assert cfg.server.listen == "127.0.0.1:2000"
    assert cfg.limits.deadline_s == 5.0
    assert cfg.limits.max_batch_elements == 3
    cfg = load_config(p, env=env, overrides={"server.listen": "127.0.0.1:3000"})
    assert cfg.server.listen == "127.0.0.1:3000"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("server: {lisen: 'x:1'}\n", "server.lisen"),
        ("limits: {max_queue: 'many'}\n", "limits.max_queue"),
        ("limits: {max_concurrency: 0}\n", "limits.max_concurrency"),
        ("backend: {kind: tensorflow}\n", "backend.kind"),
        ("backend: {kind: triton}\n", "backend.upstream"),
        ("policy: {input: [{type: no_such_check}]}\n", "policy.input[0].type"),
        ("policy: {input: [{type: signatures, on_error: maybe}]}\n", "policy.input[0].on_error"),
        ("policy: {input: [{options: {}}]}\n", "policy.input[0]"),
        ("server: {listen: 'nohostport'}\n", "server.listen"),
        ("policy: {fail_fast: 'yes'}\n", "policy.fail_fast"),
        ("telemetry: {sample_ratio: 2}\n", "telemetry.sample_ratio"),
        ("- just\n- a list\n", "top level"),
        ("server: [1, 2]\n", "server"),
        ("server: {listen: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_config_is_a_hard_error_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert field in info.value.message


def test_missing_and_empty_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", env={})
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, ""), env={})


def test_env_values_are_typed() -> None:
    out = env_overrides(
        {
            "INFERSHIELD_POLICY__FAIL_FAST": "false",
            "OTHER": "1",
            "INFERSHIELD_LIMITS__MAX_QUEUE": "7",
        }
    )
    assert out == {"policy": {"fail_fast": False}, "limits": {"max_queue": 7}}


def test_build_rejects_bool_for_int_and_accepts_int_for_float() -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_queue"):
        build(Config, {"limits": {"max_queue": True}})
    assert build(Config, {"limits": {"deadline_s": 3}}).limits.deadline_s == 3.0


# --------------------------------------------------------------------------- fail closed


def test_partial_file_keeps_the_default_checks(tmp_path: Path) -> None:
    """A file that only sets a port layers over the default policy; it does not replace it."""
    default = load_config(env={})
    cfg = load_config(write(tmp_path, "server: {listen: '127.0.0.1:9101'}\n"), env={})
    assert cfg.server.listen == "127.0.0.1:9101"
    assert cfg.policy.input == default.policy.input and cfg.policy.input
    assert cfg.policy.output == default.policy.output and cfg.policy.output
    # A nested section is merged field by field too: fail_fast changes, the checks stay.
    cfg = load_config(write(tmp_path, "policy: {fail_fast: true}\n"), env={})
    assert cfg.policy.fail_fast is True
    assert cfg.policy.input == default.policy.input


def test_a_list_in_the_file_replaces_the_default_list(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "policy: {input: [{type: repetition}]}\n"), env={})
    assert [s.type for s in cfg.policy.input] == ["repetition"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("policy: {input: []}\n", "policy.input"),
        ("policy: {output: []}\n", "policy.output"),
        ("policy: {input: [{type: repetition, enabled: false}]}\n", "policy.input"),
    ],
)
def test_an_empty_pipeline_is_an_error_unless_explicit(
    tmp_path: Path, text: str, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert field in info.value.message and "allow_empty" in info.value.message
    # The environment cannot empty a pipeline either.
    with pytest.raises(ConfigError, match=r"policy\.input"):
        load_config(env={"INFERSHIELD_POLICY__INPUT": "[]"})


def test_an_explicit_empty_pipeline_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = write(tmp_path, "policy: {input: [], allow_empty: true}\n")
    with caplog.at_level("WARNING", logger="infershield.config"):
        cfg = load_config(p, env={})
    assert cfg.policy.input == ()
    assert cfg.policy.output  # the other pipeline keeps its default checks
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("policy.input" in r.getMessage() and "NOT screened" in r.getMessage()
               for r in warned)


def test_receive_limit_follows_the_request_budget(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "limits: {max_request_bytes: 1048576}\n"), env={})
    assert 1048576 < cfg.receive_limit_bytes <= 1048576 + 128 * 1024
    assert load_config(env={}).receive_limit_bytes < 16 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"server\.max_message_bytes"):
        load_config(write(tmp_path, "server: {max_message_bytes: 0}\n"), env={})
