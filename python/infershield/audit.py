"""Tamper-evident audit log: one JSON record per screening decision, hash-chained.

Each record carries ``prev`` (the previous record's ``mac``) and its own ``mac``: an
HMAC-SHA256 over the record's canonical JSON when a key is configured (``audit.key_env`` names
the environment variable holding it), else a plain SHA-256. Editing, inserting, deleting or
reordering records breaks the chain, and :func:`verify` names the first bad line. With a key,
nobody without it can forge a consistent chain; without one the chain still catches accidental
damage and naive edits. Truncating the tail is only caught against an anchor: ``verify`` prints
the last ``seq``/``mac`` so operators can record them elsewhere.

Records never hold prompt or completion text, only its SHA-256 (to correlate with other logs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class AuditLog:
    """Append-only, hash-chained JSONL audit log. Thread-safe; reopens and continues a chain."""

    def __init__(self, path: str | Path, *, key: bytes | None = None, record_allowed: bool = False):
        self.path = Path(path)
        self.key = key or None
        self.record_allowed = record_allowed
        self._lock = threading.Lock()
        self._seq, self._prev = self._tail()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="ascii")

    @classmethod
    def from_config(cls, path: str, key_env: str, record_allowed: bool) -> AuditLog | None:
        if not path:
            return None
        raw = os.environ.get(key_env, "") if key_env else ""
        try:
            return cls(path, key=raw.encode() or None, record_allowed=record_allowed)
        except OSError as exc:
            raise ConfigError(f"audit.path: cannot open {path}: {exc.strerror}") from None

    def _tail(self) -> tuple[int, str]:
        """The last record's seq and mac; a damaged tail is a hard error, never papered over."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 65536))
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return 0, GENESIS
        if not lines:
            return 0, GENESIS
        try:
            last = json.loads(lines[-1])
            mac = last.pop("mac")
            if mac != _mac(last, self.key):
                raise ValueError("mac mismatch")
            return int(last["seq"]), str(mac)
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"audit.path: the last record of {self.path} is damaged or was written with "
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
            self._fh.write(_canonical(rec).decode() + "\n")
            self._fh.flush()
            self._seq, self._prev = rec["seq"], rec["mac"]
            return rec

    def record_results(
        self,
        results: Iterable[tuple[str, PipelineResult]],
        *,
        stage: str,
        model: str = "",
        caller: str = "",
        rpc: str = "",
        trace_id: str = "",
    ) -> None:
        """Record screening results (``(original text, result)`` pairs) that were not allowed,
        or all of them with ``record_allowed``."""
        for text, res in results:
            if res.decision is Decision.ALLOW and not self.record_allowed:
                continue
            self.record(
                {
                    "event": "screen",
                    "stage": stage,
                    "rpc": rpc,
                    "model": model,
                    "caller": caller,
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
                }
            )

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def _check_record(v: Verdict) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "name": v.check,
        "decision": v.decision.value,
        "status": v.status.value,
        "score": round(v.score, 6),
        "categories": list(v.categories),
    }
    # Numeric details are counts (pii/secrets: kind -> how many were redacted); other
    # details may quote the text and are left out: the log never holds screened values.
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


def verify(path: str | Path, *, key: bytes | None = None) -> VerifyReport:
    """Walk the chain; report the first line whose record, sequence or link is wrong."""
    prev, seq, n = GENESIS, 0, 0
    with Path(path).open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                return VerifyReport(False, n, seq, prev, "empty line", lineno)
            try:
                rec = json.loads(raw)
                mac = rec.pop("mac")
            except (ValueError, KeyError, TypeError, AttributeError):
                return VerifyReport(False, n, seq, prev, "not a JSON record with a mac", lineno)
            if not isinstance(rec, dict) or rec.get("prev") != prev:
                return VerifyReport(
                    False, n, seq, prev, "broken link to the previous record", lineno
                )
            if rec.get("seq") != seq + 1:
                return VerifyReport(False, n, seq, prev, "sequence gap or reorder", lineno)
            if not hmac.compare_digest(str(mac), _mac(rec, key)):
                return VerifyReport(False, n, seq, prev, "record altered (mac mismatch)", lineno)
            prev, seq, n = str(mac), seq + 1, n + 1
    return VerifyReport(True, n, seq, prev)
