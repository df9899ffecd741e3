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
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.server.app import serve
    from infershield.telemetry import setup_telemetry

    overrides: dict[str, Any] = {"server.listen": args.listen}
    if args.upstream:
        overrides["backend.kind"] = "triton"
        overrides["backend.upstream"] = args.upstream
    config = load_config(args.config, overrides=overrides)
    telemetry = setup_telemetry(config)
    try:
        # Reloads (SIGHUP, or the --config file changing) re-read file, env and flags alike.
        asyncio.run(
            serve(
                config,
                loader=lambda: load_config(args.config, overrides=overrides),
                config_path=args.config,
            )
        )
    finally:
        telemetry.close()
    return 0
