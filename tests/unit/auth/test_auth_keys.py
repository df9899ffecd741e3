"""The keys file: hashed storage, verification, revocation, the secret, the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from infershield.auth.keys import KeyStore, create_key, load_secret, read_records, revoke_key
from infershield.cli import main
from infershield.config import AuthConfig
from infershield.errors import ConfigError


@pytest.fixture
def auth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AuthConfig:
    monkeypatch.delenv("INFERSHIELD_KEYS_SECRET", raising=False)
    return AuthConfig(keys_file=str(tmp_path / "keys.json"))


def _store(auth: AuthConfig) -> KeyStore:
    return KeyStore.load(auth.keys_file, load_secret(auth))


def test_created_key_verifies_and_the_file_never_holds_it(auth: AuthConfig) -> None:
    rec, key = create_key(auth, tenant="acme", roles=["infer"], models=["echo"])
    assert key.startswith(f"isk_{rec.id}_") and len(key) > 50
    text = Path(auth.keys_file).read_text()
    # The secret part may itself hold "_" (url-safe base64): split on the first two only.
    assert key not in text and key.split("_", 2)[2] not in text
    assert json.loads(text)["keys"][0]["hash"].startswith("hmac-sha256:")
    assert stat.S_IMODE(Path(auth.keys_file).stat().st_mode) == 0o600
    secret_file = Path(auth.keys_file + ".secret")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    got = _store(auth).verify(key)
    assert got is not None and got.tenant == "acme" and got.roles == ("infer",)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # wrong secret part
        lambda k: "isk_0000000000000000_" + k.split("_", 2)[2],  # unknown id
        lambda k: k.replace("isk_", "xsk_"),  # not a key at all
        lambda k: "",
    ],
    ids=["wrong-secret", "unknown-id", "malformed", "empty"],
)
def test_wrong_keys_do_not_verify(auth: AuthConfig, mangle: object) -> None:
    _, key = create_key(auth, tenant="acme", roles=["infer"], models=["*"])
    assert _store(auth).verify(mangle(key)) is None  # type: ignore[operator]


def test_a_revoked_key_stops_verifying_on_reload(auth: AuthConfig) -> None:
    rec, key = create_key(auth, tenant="acme", roles=["infer"], models=["*"])
    _, other = create_key(auth, tenant="beta", roles=["infer"], models=["*"])
    before = _store(auth)
    revoke_key(auth, rec.id)
    assert before.verify(key) is not None  # the old snapshot is immutable
    after = _store(auth)
    assert after.verify(key) is None
    assert after.verify(other) is not None
    assert [r.revoked != "" for r in read_records(Path(auth.keys_file))] == [True, False]
    with pytest.raises(ConfigError, match="already revoked"):
        revoke_key(auth, rec.id)
    with pytest.raises(ConfigError, match="no such key"):
        revoke_key(auth, "nope")


def test_another_secret_verifies_nothing(auth: AuthConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    _, key = create_key(auth, tenant="acme", roles=["infer"], models=["*"])
    monkeypatch.setenv("INFERSHIELD_KEYS_SECRET", "a different secret of enough length")
    assert _store(auth).verify(key) is None


def test_missing_secret_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFERSHIELD_KEYS_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"auth.secret_file: .* does not exist"):
        load_secret(AuthConfig(keys_file=str(tmp_path / "k.json")))


def test_certificate_entries_match_by_subject(auth: AuthConfig) -> None:
    rec, key = create_key(auth, tenant="ops", roles=["admin"], models=["*"], subject="CN=ops")
    assert key == "" and rec.hash == ""
    store = _store(auth)
    assert store.by_subject("CN=ops") == rec
    assert store.by_subject("CN=other") is None
    with pytest.raises(ConfigError, match="already names"):
        create_key(auth, tenant="x", roles=["infer"], models=["*"], subject="CN=ops")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "a", "tenant": "t", "roles": ["root"], "models": ["*"], "hash": "h"}, "roles"),
        ({"id": "a", "tenant": "t", "roles": [], "models": ["*"]}, "either a key hash"),
        ({"id": "a", "roles": [], "models": ["*"], "hash": "h"}, "missing field 'tenant'"),
        ({"id": "a", "tenant": "t", "roles": "infer", "models": ["*"], "hash": "h"}, "list"),
    ],
)
def test_a_bad_keys_file_names_the_entry(tmp_path: Path, entry: dict, message: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"version": 1, "keys": [entry]}))
    with pytest.raises(ConfigError, match=r"keys\[0\]") as err:
        read_records(path)
    assert message in err.value.message


def test_cli_create_list_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("INFERSHIELD_KEYS_SECRET", raising=False)
    f = str(tmp_path / "keys.json")
    assert main(["keys", "create", "--file", f, "--tenant", "acme", "--model", "echo"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("isk_")
    assert key not in Path(f).read_text()
    assert main(["keys", "list", "--file", f, "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["tenant"] == "acme" and row["roles"] == ["infer", "scan"] and "hash" not in row
    assert key not in json.dumps(row)
    assert main(["keys", "revoke", "--file", f, row["id"]]) == 0
    assert main(["keys", "list", "--file", f]) == 0
    assert "revoked" in capsys.readouterr().out
    # A bad role is a usage error, reported without a traceback.
    with pytest.raises(SystemExit):
        main(["keys", "create", "--file", f, "--tenant", "x", "--role", "root", "--model", "*"])
    assert main(["keys", "create", "--file", f, "--tenant", "x"]) == 2  # no model named


def test_a_shared_secret_file_is_warned_about(
    auth: AuthConfig, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    create_key(auth, tenant="acme", roles=["infer"], models=["*"])
    secret = Path(auth.keys_file + ".secret")
    with caplog.at_level(logging.WARNING, logger="infershield.auth.keys"):
        load_secret(auth)
        assert "readable by other users" not in caplog.text
        secret.chmod(0o644)
        load_secret(auth)
    assert "readable by other users" in caplog.text
