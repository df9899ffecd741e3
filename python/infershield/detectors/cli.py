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

    exp = msub.add_parser("export-triton", help="write the classifier as a Triton model "
                          "repository entry (config.pbtxt + model.onnx, ONNX Runtime backend)")
    exp.add_argument("dir", metavar="DIR", help="the Triton model repository to write into")
    exp.add_argument("--model", default="", metavar="NAME",
                     help="model name in the repository (default: injection-minilm)")
    exp.add_argument("--max-batch", type=int, default=32, metavar="N",
                     help="max_batch_size: windows per batch Triton may form (default 32)")
    exp.add_argument("--source", default="", metavar="MODEL_DIR",
                     help="export this model directory instead of the shipped classifier")
    add_config_flag(exp, "cache_dir")
    exp.set_defaults(func=cmd_models_export_triton)


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


def cmd_models_export_triton(args: argparse.Namespace) -> int:
    from pathlib import Path

    from infershield.config import load_config
    from infershield.detectors.models import SHIPPED_MODEL, ensure_shipped_model
    from infershield.detectors.triton_repo import export_triton

    if args.source:
        source = Path(args.source)
    else:
        source = ensure_shipped_model(load_config(args.config).cache_path)
    entry = export_triton(source, Path(args.dir), name=args.model or SHIPPED_MODEL,
                          max_batch=args.max_batch)
    print(f"triton model: {entry}")
    print(f"  serve it with classifier.backend: triton, classifier.triton.model: {entry.name}")
    return 0
