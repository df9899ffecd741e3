"""``infershield keys create|list|revoke``: manage the API keys file.

The keys file is ``--file``, or ``auth.keys_file`` of ``--config``. ``create`` prints the
new key once, on stdout, and never again: only its HMAC is stored. A running server
picks up a revocation on SIGHUP, or within a second when it sees the file change.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from infershield.config import ROLES, AuthConfig
from infershield.errors import ConfigError


def register(sub: Any) -> None:
    """Add ``keys`` to the top-level parser."""
    p = sub.add_parser("keys", help="manage API keys (tenants, roles, models)")
    ksub = p.add_subparsers(dest="keys_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--file", help="keys file (default: auth.keys_file of --config)")
        q.add_argument("--config", help="config YAML whose auth section names the keys file")

    c = ksub.add_parser("create", help="add a key (printed once) or a client-certificate entry")
    common(c)
    c.add_argument("--tenant", required=True, help="who the key belongs to")
    c.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        help="a role (repeatable; default: infer and scan)",
    )
    c.add_argument(
        "--model", action="append", help="a model the key may call (repeatable; '*' for all)"
    )
    c.add_argument(
        "--subject",
        default="",
        help="make a client-certificate entry for this subject (e.g. 'CN=acme') instead of a key",
    )
    c.add_argument("--note", default="", help="free text kept with the entry")
    c.set_defaults(func=cmd_create)

    ls = ksub.add_parser("list", help="list entries (ids, tenants, roles, models; never keys)")
    common(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=cmd_list)

    r = ksub.add_parser("revoke", help="revoke an entry by id")
    common(r)
    r.add_argument("id", help="the entry's id (see `infershield keys list`)")
    r.set_defaults(func=cmd_revoke)


def _auth(args: argparse.Namespace) -> AuthConfig:
    if args.file:
        base = AuthConfig()
        if args.config:
            from infershield.config import load_config

            base = load_config(args.config).auth
        return dataclasses.replace(base, keys_file=args.file)
    if args.config:
        from infershield.config import load_config

        auth = load_config(args.config).auth
        if not auth.keys_file:
            raise ConfigError(f"auth.keys_file: not set in {args.config}; pass --file")
        return auth
    raise ConfigError("name the keys file with --file or a --config that sets auth.keys_file")


def cmd_create(args: argparse.Namespace) -> int:
    from infershield.auth.keys import create_key

    rec, key = create_key(
        _auth(args),
        tenant=args.tenant,
        roles=args.role or ["infer", "scan"],
        models=args.model or [],
        subject=args.subject,
        note=args.note,
    )
    what = f"certificate subject {rec.subject!r}" if rec.subject else "key"
    print(
        f"created {what} {rec.id} for tenant {rec.tenant!r} (roles: {', '.join(rec.roles)}; "
        f"models: {', '.join(rec.models)})",
        file=sys.stderr,
    )
    if key:
        print("store the key now: it is not kept and cannot be shown again", file=sys.stderr)
        print(key)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from infershield.auth.keys import read_records

    auth = _auth(args)
    for rec in read_records(Path(auth.keys_file).expanduser()):
        row = rec.to_json()
        row.pop("hash")
        if args.json:
            print(json.dumps(row))
        else:
            state = f"revoked {rec.revoked}" if rec.revoked else "active"
            who = f"subject {rec.subject}" if rec.subject else "key"
            print(
                f"{rec.id}  {rec.tenant}  {who}  roles={','.join(rec.roles)}  "
                f"models={','.join(rec.models)}  {state}"
            )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from infershield.auth.keys import revoke_key

    rec = revoke_key(_auth(args), args.id)
    print(
        f"revoked {rec.id} (tenant {rec.tenant!r}); a running server drops it on SIGHUP or "
        "when it sees the file change",
        file=sys.stderr,
    )
    return 0
