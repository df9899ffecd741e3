"""``infershield models build``: build the shipped classifier models into the cache."""

from __future__ import annotations

import argparse
from typing import Any

from infershield.cli_args import add_config_flag


def register_models(msub: Any) -> None:
    """Add ``models build`` to the ``models`` subcommand."""
    build = msub.add_parser("build", help="build the shipped classifier and its fast "
                            "prefilter into the cache")
    add_config_flag(build, "cache_dir")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument("--fp16", action="store_true",
                       help="also write model_fp16.onnx (float16, for the CUDA EP)")
    build.add_argument("--embedding", action="store_true",
                       help="also build the plain embedding model (local backend demo)")
    build.set_defaults(func=cmd_models_build)


def cmd_models_build(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.detectors.models import (
        FAST_MODEL,
        ensure_embedding_model,
        ensure_shipped_model,
    )

    cfg = load_config(args.config)
    path = ensure_shipped_model(cfg.cache_path, force=args.force, fp16=args.fp16)
    print(f"classifier: {path}")
    fast = ensure_shipped_model(cfg.cache_path, force=args.force, name=FAST_MODEL)
    print(f"prefilter: {fast}")
    if args.embedding:
        print(f"embedding: {ensure_embedding_model(cfg.cache_path)}")
    return 0
