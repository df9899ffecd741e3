"""``infershield audit verify``: check an audit log's hash chain."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from infershield.audit import verify


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="tamper-evident audit log tools")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser(
        "verify", help="verify an audit log's hash chain (with its rotated files <file>.N)"
    )
    v.add_argument("file", help="the audit log (JSONL) to verify, with its rotated files")
    v.add_argument(
        "--key-env",
        default="INFERSHIELD_AUDIT_KEY",
        help="environment variable holding the HMAC key (unset: plain SHA-256 chain)",
    )
    v.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    key = os.environ.get(args.key_env, "").encode() or None
    rep = verify(args.file, key=key)
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
    print(json.dumps(out))
    return 0 if rep.ok else 1
