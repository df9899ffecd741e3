"""``infershield audit verify``: check an audit log's hash chain."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from infershield.audit import VerifyReport, verify_set


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="tamper-evident audit log tools")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser(
        "verify", help="verify an audit log's hash chain (with its rotated files <file>.N)"
    )
    v.add_argument(
        "file",
        help="the audit log (JSONL) to verify, with its rotated files and, with "
        "server.processes > 1, every process's chain (<stem>.p<N><suffix>)",
    )
    v.add_argument(
        "--key-env",
        default="INFERSHIELD_AUDIT_KEY",
        help="environment variable holding the HMAC key (unset: plain SHA-256 chain)",
    )
    v.set_defaults(func=cmd_verify)


def _report(rep: VerifyReport, key: bytes | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ok": rep.ok,
        "records": rep.records,
        "last_seq": rep.last_seq,
        "last_mac": rep.last_mac,
        "keyed": key is not None,
        "files": rep.files,
    }
    if not rep.ok:
        out.update(error=rep.error, line=rep.bad_line, file=rep.bad_file)
    return out


def cmd_verify(args: argparse.Namespace) -> int:
    key = os.environ.get(args.key_env, "").encode() or None
    rep = verify_set(args.file, key=key)
    if list(rep.chains) == [None]:  # one process: the report of old
        print(json.dumps(_report(rep.chains[None], key)))
        return 0 if rep.ok else 1
    out: dict[str, Any] = {
        "ok": rep.ok,
        "keyed": key is not None,
        "chains": {
            "main" if index is None else f"p{index}": _report(r, key)
            for index, r in rep.chains.items()
        },
    }
    if rep.missing:
        out["missing"] = [f"p{i}" for i in rep.missing]
        out["error"] = "process chains missing: " + ", ".join(out["missing"])
    print(json.dumps(out))
    return 0 if rep.ok else 1
