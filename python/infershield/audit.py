"""Tamper-evident audit log: one JSON record per screening decision, hash-chained.

Each record carries ``prev`` (the previous record's ``mac``) and its own ``mac``: an
HMAC-SHA256 over the record's canonical JSON when a key is configured (``audit.key_env`` names
the environment variable holding it), else a plain SHA-256. Editing, inserting, deleting or
reordering records breaks the chain, and :func:`verify` names the first bad line. With a key,
nobody without it can forge a consistent chain; without one the chain still catches accidental
damage and naive edits. Truncating the tail is only caught against an anchor: ``verify`` prints
the last ``seq``/``mac`` so operators can record them elsewhere.

With ``server.processes`` > 1 each serving process keeps its own chain,
``<stem>.p<i><suffix>`` (:func:`process_chain_path`), which starts each run with an ``open``
record naming the process and the count; :func:`verify_set` checks every chain and that none
of the declared ones is missing.

Records never hold prompt or completion text, only its SHA-256 (to correlate with other logs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from infershield.errors import ConfigError
from infershield.pipeline import PipelineResult
from infershield.verdict import Decision, Verdict

GENESIS = "0" * 64


def _canonical(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(record: Mapping[str, Any], key: bytes | None) -> str:
    body = _canonical(record)
    if key:
        return hmac.new(key, body, hashlib.sha256).hexdigest()
    return hashlib.sha256(body).hexdigest()


FsyncMode = Literal["always", "interval", "never"]


def rotated_files(path: str | Path) -> list[Path]:
    """The rotated files of ``path`` (``<path>.1``, ``<path>.2`` …), oldest first."""
    p = Path(path)
    found: list[tuple[int, Path]] = []
    for sib in p.parent.glob(p.name + ".*"):
        suffix = sib.name[len(p.name) + 1 :]
        if suffix.isascii() and suffix.isdigit():
            found.append((int(suffix), sib))
    return [f for _, f in sorted(found)]


def process_chain_path(path: str | Path, index: int) -> Path:
    """The chain of serving process ``index``: ``audit.jsonl`` -> ``audit.p0.jsonl``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.p{index}{p.suffix}")


def process_chains(path: str | Path) -> dict[int, Path]:
    """The per-process chains of ``path`` that exist (live or rotated), by process index."""
    p = Path(path)
    found: dict[int, Path] = {}
    for sib in p.parent.glob(f"{p.stem}.p*{p.suffix}*"):
        rest = sib.name[len(p.stem) + 2 :]
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        if not digits or not digits.isascii():
            continue
        live = p.with_name(f"{p.stem}.p{digits}{p.suffix}")
        if sib == live or sib in rotated_files(live):
            found[int(digits)] = live
    return dict(sorted(found.items()))


def _fsync_dir(path: Path) -> None:
    # A new or renamed file's directory entry is only durable once its directory is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """Append-only, hash-chained JSONL audit log. Thread-safe; reopens and continues a chain.

    Durability (``fsync``): ``always`` syncs each record to disk before :meth:`record`
    returns (so a request's record is on disk before its reply is sent); ``interval`` syncs on
    the first record after ``fsync_interval_s`` has passed, and on close; ``never`` leaves it
    to the OS. Rotation: once the live file reaches ``rotate_bytes`` or is ``rotate_s`` old,
    it is renamed to ``<path>.<n>`` (n counting up, oldest first) and a new file continues
    the same chain (``seq`` and ``prev`` run on), so :func:`verify` checks the whole set.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        key: bytes | None = None,
        record_allowed: bool = False,
        fsync: FsyncMode = "interval",
        fsync_interval_s: float = 1.0,
        rotate_bytes: int = 0,
        rotate_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        self.key = key or None
        self.record_allowed = record_allowed
        self.fsync = fsync
        self.fsync_interval_s = fsync_interval_s
        self.rotate_bytes = rotate_bytes
        self.rotate_s = rotate_s
        self._clock = clock
        self._lock = threading.Lock()
        self._seq, self._prev = self._tail()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        self._fh = self.path.open("a", encoding="ascii")
        self._size = self._fh.tell()
        self._opened = self._last_sync = self._clock()
        if self.fsync == "always":
            _fsync_dir(self.path.parent)

    @classmethod
    def from_config(
        cls, path: str, key_env: str, record_allowed: bool, **durability: Any
    ) -> AuditLog | None:
        """``durability``: ``fsync``, ``fsync_interval_s``, ``rotate_bytes``, ``rotate_s``."""
        if not path:
            return None
        raw = os.environ.get(key_env, "") if key_env else ""
        try:
            return cls(path, key=raw.encode() or None, record_allowed=record_allowed, **durability)
        except OSError as exc:
            raise ConfigError(f"audit.path: cannot open {path}: {exc.strerror}") from None

    def _tail(self) -> tuple[int, str]:
        """The last record's seq and mac (of the live file, else of the newest rotated one);
        a damaged tail is a hard error, never papered over."""
        for candidate in (self.path, *reversed(rotated_files(self.path))):
            tail = self._file_tail(candidate)
            if tail is not None:
                return tail
        return 0, GENESIS

    def _file_tail(self, path: Path) -> tuple[int, str] | None:
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 65536))
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return None
        if not lines:
            return None
        try:
            last = json.loads(lines[-1])
            mac = last.pop("mac")
            if mac != _mac(last, self.key):
                raise ValueError("mac mismatch")
            return int(last["seq"]), str(mac)
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"audit.path: the last record of {path} is damaged or was written with "
                "another key; run `infershield audit verify` and rotate the file"
            ) from None

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append one event (a JSON-able mapping) and return the stored record."""
        with self._lock:
            rec: dict[str, Any] = {
                **event,
                "seq": self._seq + 1,
                "ts": round(time.time(), 6),
                "prev": self._prev,
            }
            rec["mac"] = _mac(rec, self.key)
            line = _canonical(rec).decode() + "\n"
            self._fh.write(line)
            self._fh.flush()
            self._size += len(line)
            self._seq, self._prev = rec["seq"], rec["mac"]
            now = self._clock()
            if self.fsync == "always" or (
                self.fsync == "interval" and now - self._last_sync >= self.fsync_interval_s
            ):
                os.fsync(self._fh.fileno())
                self._last_sync = now
            if (self.rotate_bytes and self._size >= self.rotate_bytes) or (
                self.rotate_s and now - self._opened >= self.rotate_s
            ):
                self._rotate()
            return rec

    def _rotate(self) -> None:
        """Close the live file and rename it to the next ``<path>.<n>``; open a fresh one."""
        os.fsync(self._fh.fileno())
        self._fh.close()
        existing = rotated_files(self.path)
        n = int(existing[-1].name.rpartition(".")[2]) + 1 if existing else 1
        os.replace(self.path, self.path.with_name(f"{self.path.name}.{n}"))
        self._open()
        _fsync_dir(self.path.parent)

    def record_results(
        self,
        results: Iterable[tuple[str, PipelineResult]],
        *,
        stage: str,
        model: str = "",
        caller: str = "",
        key_id: str = "",
        rpc: str = "",
        trace_id: str = "",
        request_id: str = "",
        role: str = "",
    ) -> None:
        """Record screening results (``(original text, result)`` pairs) that were not allowed,
        or all of them with ``record_allowed``. ``caller`` is the tenant (or, for anonymous
        callers, the address) and ``key_id`` the API key's public id. Each recorded check
        carries its full reason and details (rule ids), which the caller is not shown.
        ``request_id`` (the caller's, when it gave one) is kept so a reply can be matched to
        its record. ``role`` names the chat role of untrusted content (``tool``,
        ``document``) so an operator sees where an attack came from."""
        for text, res in results:
            if res.decision is Decision.ALLOW and not self.record_allowed:
                continue
            extra = {"request_id": request_id} if request_id else {}
            self.record(
                {
                    **extra,
                    "event": "screen",
                    "stage": stage,
                    "rpc": rpc,
                    "model": model,
                    "caller": caller,
                    "key_id": key_id,
                    "decision": res.decision.value,
                    "score": round(res.score, 6),
                    "categories": res.categories,
                    "checks": [
                        _check_record(v)
                        for v in res.verdicts
                        if v.decision is not Decision.ALLOW or v.status.value != "ok"
                    ],
                    "text_sha256": hashlib.sha256(
                        text.encode("utf-8", "surrogatepass")
                    ).hexdigest(),
                    "trace_id": trace_id,
                    **({"role": role} if role else {}),
                }
            )

    def close(self) -> None:
        with self._lock:
            if self._fh.closed:
                return
            self._fh.flush()
            if self.fsync != "never":
                os.fsync(self._fh.fileno())
            self._fh.close()


def _check_record(v: Verdict) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "name": v.check,
        "decision": v.decision.value,
        "status": v.status.value,
        "score": round(v.score, 6),
        "categories": list(v.categories),
        "reason": v.reason,
        "details": dict(v.details),
    }
    # Numeric details are counts (pii/secrets: kind -> how many were redacted): recorded as
    # integers too, so a query can sum them. Kinds and counts only, never the values.
    counts = {k: int(n) for k, n in v.details if n.isdigit()}
    if counts:
        rec["counts"] = counts
    return rec


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    last_seq: int
    last_mac: str
    error: str = ""
    bad_line: int = 0
    #: The file holding the bad line (rotated sets), and how many files were checked.
    bad_file: str = ""
    files: int = 1


def verify(path: str | Path, *, key: bytes | None = None) -> VerifyReport:
    """Walk the chain through the rotated files of ``path`` (oldest first), then ``path``;
    report the first line whose record, sequence or link is wrong."""
    p = Path(path)
    files = rotated_files(p)
    if p.exists() or not files:
        files.append(p)
    prev, seq, n = GENESIS, 0, 0
    for f in files:
        with f.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                error, mac = _check_line(raw, prev, seq, key)
                if error:
                    return VerifyReport(False, n, seq, prev, error, lineno, str(f), len(files))
                prev, seq, n = mac, seq + 1, n + 1
    return VerifyReport(True, n, seq, prev, files=len(files))


@dataclass(frozen=True)
class SetReport:
    """:func:`verify_set`: one report per chain found (``None``: the plain one), and the
    declared process indices that have no chain at all."""

    ok: bool
    chains: dict[int | None, VerifyReport]
    missing: tuple[int, ...] = ()


def verify_set(path: str | Path, *, key: bytes | None = None) -> SetReport:
    """Verify ``path``'s chain and every per-process chain beside it.

    Each process chain starts every run with an ``open`` record carrying ``processes`` (the
    count it ran with); a chain for every index below the largest count any intact chain
    declares must exist, so deleting a whole chain is caught like editing one. The plain
    chain is checked when it exists or when there is no process chain (a missing log fails).
    """
    p = Path(path)
    chains: dict[int | None, VerifyReport] = {}
    procs = process_chains(p)
    if p.exists() or rotated_files(p) or not procs:
        chains[None] = verify(p, key=key)
    declared = 0
    for index, live in procs.items():
        rep = verify(live, key=key)
        chains[index] = rep
        if rep.ok:
            declared = max(declared, _declared_processes(live))
    missing = tuple(i for i in range(declared) if i not in procs)
    ok = all(r.ok for r in chains.values()) and not missing
    return SetReport(ok, chains, missing)


def _declared_processes(live: Path) -> int:
    """The largest ``processes`` an ``open`` record of this (verified) chain declares."""
    most = 0
    for f in (*rotated_files(live), live):
        if not f.exists():
            continue
        with f.open("rb") as fh:
            for raw in fh:
                if b'"event":"open"' in raw:
                    rec = json.loads(raw)
                    most = max(most, int(rec.get("processes", 0)))
    return most


def _check_line(raw: bytes, prev: str, seq: int, key: bytes | None) -> tuple[str, str]:
    """(error or "", the record's mac) for one line that should follow ``prev``/``seq``."""
    if not raw.strip():
        return "empty line", ""
    try:
        rec = json.loads(raw)
        mac = rec.pop("mac")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "not a JSON record with a mac", ""
    if not isinstance(rec, dict) or rec.get("prev") != prev:
        return "broken link to the previous record", ""
    if rec.get("seq") != seq + 1:
        return "sequence gap or reorder", ""
    if not hmac.compare_digest(str(mac), _mac(rec, key)):
        return "record altered (mac mismatch)", ""
    return "", str(mac)
