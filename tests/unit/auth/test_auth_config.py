"""Config for access control: safe defaults, the removed admin switch, TLS fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from infershield.config import load_config
from infershield.errors import ConfigError


def _load(tmp_path: Path, data: dict) -> object:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_config(p, env={})


@pytest.mark.parametrize("listen", ["127.0.0.1:9000", "localhost:9000", "[::1]:9000"])
def test_loopback_needs_no_keys(tmp_path: Path, listen: str) -> None:
    _load(tmp_path, {"server": {"listen": listen}})


@pytest.mark.parametrize("listen", ["0.0.0.0:9000", "[::]:9000", "10.0.0.5:9000", "host:9000"])
def test_open_non_loopback_listen_is_refused(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"^server.listen: .*auth.keys_file.*server.insecure"):
        _load(tmp_path, {"server": {"listen": listen}})
    # Allowed with keys, with mTLS, or when explicitly insecure.
    _load(tmp_path, {"server": {"listen": listen}, "auth": {"keys_file": "k.json"}})
    _load(tmp_path, {"server": {"listen": listen, "insecure": True}})
    _load(
        tmp_path,
        {"server": {"listen": listen, "tls": {"cert": "c", "key": "k", "client_ca": "ca"}}},
    )


def test_environment_cannot_sneak_an_open_listener(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"server": {"listen": "127.0.0.1:9000"}}))
    with pytest.raises(ConfigError, match=r"server\.listen: 0\.0\.0\.0:9000 is reachable"):
        load_config(p, env={"INFERSHIELD_SERVER__LISTEN": "0.0.0.0:9000"})


def test_allow_admin_rpcs_names_its_replacement(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"policy": {"allow_admin_rpcs": True}})
    msg = err.value.message
    assert msg.startswith("policy.allow_admin_rpcs: removed")
    assert "admin" in msg and "keys create" in msg and "auth.anonymous_roles" in msg


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"server": {"tls": {"cert": "c"}}}, "server.tls.cert/key"),
        ({"server": {"tls": {"client_ca": "ca"}}}, "server.tls.client_ca"),
        ({"backend": {"tls": {"key": "k"}}}, "backend.tls.cert/key"),
        ({"server": {"allow_cidrs": ["10.0.0.0/33"]}}, "server.allow_cidrs[0]"),
        ({"server": {"trusted_proxies": ["proxy"]}}, "server.trusted_proxies[0]"),
        ({"auth": {"anonymous_roles": ["root"]}}, "auth.anonymous_roles[0]"),
        ({"auth": {"public": ["metrics"]}}, "auth.public[0]"),
    ],
)
def test_bad_access_fields_are_named(tmp_path: Path, data: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data)
    assert err.value.message.startswith(field)


def test_serve_on_an_open_address_says_why_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    from infershield.cli import main

    assert main(["serve", "--listen", "0.0.0.0:19999"]) == 2
    err = capsys.readouterr().err
    assert "server.listen: 0.0.0.0:19999 is reachable from other hosts" in err
    assert "server.insecure" in err
