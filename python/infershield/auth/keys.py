"""The keys file: API keys stored hashed, each mapped to a tenant, roles and models.

A key looks like ``isk_<id>_<secret>``. The ``id`` is public (``infershield keys list``
shows it, audit records name it); the whole key is stored only as
``HMAC-SHA256(server secret, key)``, so the file alone neither reveals a key nor lets
anyone test guesses against it. Verification looks the record up by ``id`` and compares
the digests with :func:`hmac.compare_digest` (constant time); it costs one HMAC, a few
microseconds, so it runs on every request.

The server secret comes from the environment variable ``auth.secret_env`` when that is set,
else from ``auth.secret_file`` (default: the keys file's path plus ``.secret``), which
``infershield keys create`` writes (mode 0600) the first time.

A record may name a client-certificate ``subject`` instead of holding a key: with mTLS, a
caller presenting a certificate with that subject is that tenant.

The file is JSON, written atomically (temp file + rename, mode 0600) under a lock file, so
concurrent ``infershield keys`` commands never lose an update and a server reloading it
never reads half a file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infershield.config import ROLES, AuthConfig
from infershield.errors import ConfigError

log = logging.getLogger(__name__)

KEY_PREFIX = "isk_"
FORMAT_VERSION = 1
#: Models value that allows every model.
ALL_MODELS = "*"
_ID_BYTES = 8
_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One entry of the keys file (never holds a plain key)."""

    id: str
    tenant: str
    roles: tuple[str, ...]
    #: Model names this entry may call; ``("*",)`` allows all.
    models: tuple[str, ...]
    #: ``hmac-sha256:<hex>`` of the whole key, or "" for a certificate entry.
    hash: str = ""
    #: Client-certificate subject (``CN=…``) that identifies this tenant, or "".
    subject: str = ""
    created: str = ""
    revoked: str = ""
    note: str = ""

    @property
    def active(self) -> bool:
        return not self.revoked

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "roles": list(self.roles),
            "models": list(self.models),
            "hash": self.hash,
            "subject": self.subject,
            "created": self.created,
            "revoked": self.revoked,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> KeyRecord:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected an object")
        try:
            rec = cls(
                id=_str(data, "id", where),
                tenant=_str(data, "tenant", where),
                roles=tuple(_strs(data, "roles", where)),
                models=tuple(_strs(data, "models", where)),
                hash=_str(data, "hash", where, ""),
                subject=_str(data, "subject", where, ""),
                created=_str(data, "created", where, ""),
                revoked=_str(data, "revoked", where, ""),
                note=_str(data, "note", where, ""),
            )
        except KeyError as exc:
            raise ConfigError(f"{where}: missing field {exc.args[0]!r}") from None
        for role in rec.roles:
            if role not in ROLES:
                raise ConfigError(f"{where}.roles: unknown role {role!r}")
        if bool(rec.hash) == bool(rec.subject):
            raise ConfigError(f"{where}: an entry holds either a key hash or a subject")
        return rec


def _str(data: Mapping[str, Any], name: str, where: str, default: str | None = None) -> str:
    if name not in data:
        if default is None:
            raise KeyError(name)
        return default
    value = data[name]
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{name}: expected a string")
    return value


def _strs(data: Mapping[str, Any], name: str, where: str) -> list[str]:
    value = data[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{name}: expected a list of strings")
    return value


# --------------------------------------------------------------------------- the secret


def secret_path(auth: AuthConfig) -> Path:
    """Where the server secret lives when ``auth.secret_env`` is not set."""
    if auth.secret_file:
        return Path(auth.secret_file).expanduser()
    return Path(auth.keys_file).expanduser().with_name(Path(auth.keys_file).name + ".secret")


def load_secret(auth: AuthConfig, *, create: bool = False) -> bytes:
    """The server secret keys are hashed with; ``create`` writes a new secret file if none."""
    if auth.secret_env and os.environ.get(auth.secret_env):
        return os.environ[auth.secret_env].encode()
    path = secret_path(auth)
    try:
        raw = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"auth.secret_file: {path} does not exist and ${auth.secret_env} is unset; "
                "`infershield keys create` writes it with the first key"
            ) from None
        raw = secrets.token_hex(32).encode()
        _write_private(path, raw + b"\n")
    except OSError as exc:
        raise ConfigError(f"auth.secret_file: cannot read {path}: {exc.strerror}") from None
    if len(raw) < 16:
        raise ConfigError(f"auth.secret_file: {path} holds fewer than 16 bytes")
    _warn_if_shared(path)
    return raw


def _warn_if_shared(path: Path) -> None:
    """Log when a secret-bearing file is readable by others than its owner."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)


HASH_PREFIX = "hmac-sha256:"


def key_digest(secret: bytes, key: str) -> bytes:
    return hmac.digest(secret, key.encode(), hashlib.sha256)


def key_hash(secret: bytes, key: str) -> str:
    return HASH_PREFIX + key_digest(secret, key).hex()


def split_key(key: str) -> str | None:
    """The public id of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    kid, sep, rest = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(kid) != 2 * _ID_BYTES or not rest:
        return None
    return kid


# --------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class KeyStore:
    """An immutable snapshot of a keys file, with the server secret to verify keys."""

    records: tuple[KeyRecord, ...]
    secret: bytes = field(repr=False)
    _by_id: dict[str, tuple[KeyRecord, bytes]] = field(init=False, repr=False, compare=False)
    _by_subject: dict[str, KeyRecord] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        active = [r for r in self.records if r.active]
        by_id: dict[str, tuple[KeyRecord, bytes]] = {}
        for r in active:
            if r.hash:
                if not r.hash.startswith(HASH_PREFIX):
                    raise ConfigError(f"auth.keys_file: key {r.id}: unknown hash scheme")
                try:
                    by_id[r.id] = (r, bytes.fromhex(r.hash[len(HASH_PREFIX) :]))
                except ValueError:
                    raise ConfigError(f"auth.keys_file: key {r.id}: malformed hash") from None
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_subject", {r.subject: r for r in active if r.subject})

    @classmethod
    def load(cls, path: str | Path, secret: bytes) -> KeyStore:
        """Read and validate ``path``; every problem is a ConfigError naming the entry."""
        return cls(read_records(Path(path)), secret)

    def verify(self, key: str) -> KeyRecord | None:
        """The active record ``key`` belongs to, or None (unknown, wrong or revoked)."""
        kid = split_key(key)
        found = self._by_id.get(kid) if kid is not None else None
        # Hash even when the id is unknown, so the time taken says nothing about the id.
        digest = key_digest(self.secret, key)
        if found is None:
            return None
        rec, want = found
        return rec if hmac.compare_digest(digest, want) else None

    def by_subject(self, subject: str) -> KeyRecord | None:
        """The active certificate entry for a client-certificate subject, or None."""
        return self._by_subject.get(subject)


def read_records(path: Path) -> tuple[KeyRecord, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"auth.keys_file: {path} does not exist (`infershield keys create` makes it)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"auth.keys_file: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"auth.keys_file: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ConfigError(f'auth.keys_file: {path} must be an object with a "keys" list')
    if data.get("version") != FORMAT_VERSION:
        raise ConfigError(f"auth.keys_file: {path} has an unknown version {data.get('version')!r}")
    records = tuple(
        KeyRecord.from_json(r, f"auth.keys_file: {path}: keys[{i}]")
        for i, r in enumerate(data["keys"])
    )
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise ConfigError(f"auth.keys_file: {path}: duplicate id {r.id!r}")
        seen.add(r.id)
    return records


def _write_private(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[list[KeyRecord]]:
    """Read-modify-write the records of ``path`` under an exclusive lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = list(read_records(path)) if path.exists() else []
        yield records
        body = {"version": FORMAT_VERSION, "keys": [r.to_json() for r in records]}
        _write_private(path, (json.dumps(body, indent=2) + "\n").encode())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def create_key(
    auth: AuthConfig,
    *,
    tenant: str,
    roles: Sequence[str],
    models: Sequence[str],
    subject: str = "",
    note: str = "",
) -> tuple[KeyRecord, str]:
    """Add an entry; returns it and the plain key ("" for a certificate entry).

    The plain key exists only in the return value: show it once, it cannot be recovered.
    """
    if not tenant:
        raise ConfigError("tenant: required")
    for role in roles:
        if role not in ROLES:
            raise ConfigError(f"role: unknown role {role!r} (known: {', '.join(ROLES)})")
    if not models:
        raise ConfigError(f"models: name at least one model, or {ALL_MODELS!r} for all")
    path = Path(auth.keys_file).expanduser()
    secret = load_secret(auth, create=True)  # the server needs one even for subjects
    with _locked(path) as records:
        ids = {r.id for r in records}
        kid = secrets.token_hex(_ID_BYTES)
        while kid in ids:
            kid = secrets.token_hex(_ID_BYTES)
        if subject:
            if any(r.subject == subject and r.active for r in records):
                raise ConfigError(f"subject: an active entry already names {subject!r}")
            key, digest = "", ""
        else:
            key = f"{KEY_PREFIX}{kid}_{secrets.token_urlsafe(_SECRET_BYTES)}"
            digest = key_hash(secret, key)
        rec = KeyRecord(
            id=kid,
            tenant=tenant,
            roles=tuple(dict.fromkeys(roles)),
            models=tuple(dict.fromkeys(models)),
            hash=digest,
            subject=subject,
            created=_now(),
            note=note,
        )
        records.append(rec)
    return rec, key


def revoke_key(auth: AuthConfig, key_id: str) -> KeyRecord:
    """Mark an entry revoked (it stays listed); a server drops it on its next reload."""
    path = Path(auth.keys_file).expanduser()
    with _locked(path) as records:
        for i, r in enumerate(records):
            if r.id == key_id:
                if r.revoked:
                    raise ConfigError(f"key {key_id}: already revoked at {r.revoked}")
                records[i] = KeyRecord(**{**r.to_json(), "roles": r.roles, "models": r.models,
                                          "revoked": _now()})
                return records[i]
    raise ConfigError(f"key {key_id}: no such key in {path}")
