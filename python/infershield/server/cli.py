"""``infershield serve``: run the firewall (Triton drop-in + own API) until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from infershield.cli_args import add_config_flag


def register(sub: Any) -> None:
    """Add ``serve`` to the top-level parser."""
    p = sub.add_parser(
        "serve",
        help="serve the Triton-compatible API and the own API on one port",
        description="Without --upstream the embedded local backend serves the built-in model "
        "(no Triton needed). Flags override the config file and the environment.",
    )
    add_config_flag(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 127.0.0.1:8001)")
    p.add_argument(
        "--upstream",
        metavar="triton://HOST:PORT",
        help="forward to a remote Triton instead of the embedded local backend",
    )
    p.add_argument(
        "--processes",
        metavar="N|auto",
        type=_processes,
        help="serving processes on the one port (server.processes; default 1, auto: one "
        "per core, capped)",
    )
    p.set_defaults(func=cmd_serve)


def _processes(raw: str) -> int | str:
    if raw == "auto":
        return raw
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'auto', got {raw!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.server.processes import ProcessSlot, die_with_parent, supervise

    slot = ProcessSlot.from_env()
    if slot is not None:
        die_with_parent(slot.supervisor)
    overrides: dict[str, Any] = {
        "server.listen": args.listen,
        "server.processes": getattr(args, "processes", None),
    }
    if args.upstream:
        overrides["backend.kind"] = "triton"
        overrides["backend.upstream"] = args.upstream
    config = load_config(args.config, overrides=overrides)
    if slot is None and config.process_count > 1:
        return supervise(config)

    from infershield.server.app import serve
    from infershield.telemetry import setup_telemetry

    # A child records metrics into the supervisor's directory; the supervisor serves them.
    telemetry = setup_telemetry(config, serve_metrics=slot is None)
    try:
        # Reloads (SIGHUP, or the --config file changing) re-read file, env and flags alike.
        asyncio.run(
            serve(
                config,
                loader=lambda: load_config(args.config, overrides=overrides),
                config_path=args.config,
                slot=slot,
            )
        )
    finally:
        telemetry.close()
    return 0
