"""The ``infershield`` command line: scan, rules, serve, models, eval, top, audit, keys."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from infershield.cli_args import add_config_flag
from infershield.errors import FirewallError

EXIT_OK = 0
EXIT_LINE_ERRORS = 1
EXIT_USAGE = 2
EXIT_BLOCKED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infershield",
        description="InferShield, an inference firewall for Triton-served models: screen text "
        "offline (scan), serve the firewall (serve), check rule packs (rules), build or train "
        "the classifier (models), measure detection (eval), watch a running server (top), "
        "verify its audit log (audit), manage API keys (keys), red-team a firewall or a policy "
        "(redteam) and evaluate the classifier across data sources (detector).")
    sub = parser.add_subparsers(dest="command", required=True)

    scan = sub.add_parser("scan", help="screen text offline; one JSON verdict per input line")
    add_config_flag(scan)
    scan.add_argument("text", nargs="*", help="text to scan (default: read stdin)")
    scan.add_argument(
        "--jsonl", metavar="FILE", help='one {"text": ...} object per line ("-" = stdin)'
    )
    scan.add_argument("--stage", choices=["input", "output"], default="input",
                      help="screen as prompts (input, the default) or as model replies (output)")
    scan.add_argument("--batch-size", type=int, default=256, metavar="N",
                      help="lines screened per pipeline call (default 256)")
    scan.add_argument(
        "--fail-on-block", action="store_true", help=f"exit {EXIT_BLOCKED} if any input is blocked"
    )
    scan.set_defaults(func=cmd_scan)

    for register in _subcommand_registrars():
        register(sub)
    return parser


def _subcommand_registrars() -> list[Any]:
    """Subcommands living in their own modules register themselves here."""
    import importlib

    def register(name: str) -> Any:
        return importlib.import_module(name).register

    return [register("infershield.rules.cli"), register("infershield.server.cli"),
            _register_models, register("infershield.training.cli"),
            register("infershield.top"), register("infershield.audit_cli"),
            register("infershield.auth.cli"), register("infershield.redteam.cli"),
            register("infershield.training.detector_cli")]


def _register_models(sub: Any) -> None:
    """``models``: ``build`` (the shipped models, runtime) and the training commands."""
    from infershield.detectors import cli as build_cli
    from infershield.training import cli as training_cli

    models = sub.add_parser("models", help="build the shipped classifier models or train one")
    msub = models.add_subparsers(dest="models_command", required=True)
    build_cli.register_models(msub)
    training_cli.register_models(msub)


# ------------------------------------------------------------------------------ scan


def _iter_inputs(
    args: argparse.Namespace, stdin: TextIO
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Yield (line_no, record-or-error-message)."""
    if args.jsonl:
        fh = stdin if args.jsonl == "-" else open(args.jsonl, encoding="utf-8", errors="replace")  # noqa: SIM115
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield n, f"invalid JSON: {exc.msg} at column {exc.colno}"
                    continue
                if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                    yield n, 'expected an object with a string "text" field'
                    continue
                yield n, rec
        finally:
            if fh is not stdin:
                fh.close()
    elif args.text:
        for n, t in enumerate(args.text, 1):
            yield n, {"text": t}
    else:
        yield 1, {"text": stdin.read()}


def cmd_scan(
    args: argparse.Namespace, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    # Resolved at call time, not import time, so redirected/captured streams are honoured.
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    from infershield.checks.base import CheckContext
    from infershield.config import load_config
    from infershield.policy import Policy

    policy = Policy.from_config(load_config(args.config))
    pipeline = policy.input if args.stage == "input" else policy.output
    any_error = any_blocked = False

    def flush(batch: list[tuple[int, dict[str, Any] | str]]) -> None:
        nonlocal any_error, any_blocked
        recs = [(n, r) for n, r in batch if isinstance(r, dict)]
        ctxs = [CheckContext(text=r["text"], stage=args.stage) for _, r in recs]
        results = iter(pipeline.run_batch(ctxs)) if ctxs else iter(())
        for n, rec in batch:
            if isinstance(rec, str):
                any_error = True
                stdout.write(json.dumps({"line": n, "error": rec}) + "\n")
                continue
            res = next(results)
            any_blocked |= res.blocked
            out = {k: v for k, v in rec.items() if k != "text"}
            out.update(res.to_dict())
            if res.text != rec["text"]:
                out["rewritten"] = res.text
            stdout.write(json.dumps(out, ensure_ascii=False) + "\n")

    batch: list[tuple[int, dict[str, Any] | str]] = []
    try:
        for item in _iter_inputs(args, stdin):
            batch.append(item)
            if len(batch) >= max(1, args.batch_size):
                flush(batch)
                batch = []
        flush(batch)
    finally:
        policy.close()
    if any_error:
        return EXIT_LINE_ERRORS
    if any_blocked and args.fail_on_block:
        return EXIT_BLOCKED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc: int = args.func(args)
    except FirewallError as exc:
        print(f"infershield: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"infershield: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return rc


if __name__ == "__main__":
    sys.exit(main())
