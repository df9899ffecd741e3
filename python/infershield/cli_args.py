"""Command-line arguments shared by several subcommands (``--config``)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import Any


def shipped_policies() -> list[str]:
    """Names of the policies shipped in the package (``default``, ``rules_only`` …)."""
    folder = resources.files("infershield") / "policies"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir()
                  if p.name.endswith(".yaml"))


def config_argument(value: str) -> str:
    """``--config`` value: a YAML path, or the name of a shipped policy.

    An existing file wins over a shipped name; anything else is a usage error listing the
    shipped names (rather than a file-not-found later).
    """
    if Path(value).expanduser().is_file():
        return value
    if value in shipped_policies():
        from infershield.config import default_policy_path

        return str(default_policy_path(value))
    raise argparse.ArgumentTypeError(
        f"{value!r} is neither a file nor a shipped policy "
        f"(shipped: {', '.join(shipped_policies())})")


def add_config_flag(parser: Any, purpose: str = "the policy and settings") -> None:
    """Add ``--config FILE|NAME`` to ``parser``; ``purpose`` says what the command reads."""
    parser.add_argument(
        "--config", type=config_argument, metavar="FILE|NAME",
        help=f"config YAML for {purpose}, or a shipped policy name "
             f"({', '.join(shipped_policies())}); default: the shipped default policy")
