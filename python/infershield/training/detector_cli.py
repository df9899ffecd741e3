"""``infershield detector cv|train|baseline|padding|set-spans``: cross-source evaluation
and the span head."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from infershield.errors import InvalidRequest


def register(sub: Any) -> None:
    """Add the ``detector`` subcommands to the top-level parser."""
    det = sub.add_parser("detector", help="cross-source evaluation and training of the "
                         "classifier head on cached encoder features (numpy)")
    dsub = det.add_subparsers(dest="detector_command", required=True)
    for name, helptext in (
        ("cv", "group k-fold by source repository: out-of-fold AUC, TPR@1%%FPR per attack "
               "source, FPR per benign source"),
        ("train", "cross-source run, then train the head on everything with the threshold "
                  "from the pooled out-of-fold benign scores"),
    ):
        p = dsub.add_parser(name, help=helptext)
        _common(p)
        p.add_argument("--folds", type=int, default=5,
                       help="groups of source repositories, each held out once (default 5)")
        p.add_argument("--target-fpr", type=float, default=0.005,
                       help="pooled out-of-fold benign FPR the threshold is chosen for")
        p.add_argument("--whole-windows", action="store_true",
                       help="score whole windows only (the pre-span baseline)")
        p.add_argument("--no-written", action="store_true",
                       help="leave out the written rows (training/data/written.yaml)")
        p.add_argument("--no-augment", action="store_true",
                       help="leave out the mutated copies of attacks")
        p.add_argument("--hidden", type=int, default=256,
                       help="hidden units of the head's MLP (default 256)")
        p.add_argument("--epochs", type=int, default=30,
                       help="training epochs of each head (default 30)")
        p.add_argument("--rounds", type=int, default=2,
                       help="multiple-instance rounds after the first")
        p.add_argument("--label-smoothing", type=float, default=0.0,
                       help="soften the 0/1 targets by this much (default 0)")
        p.add_argument("--probe", action="append", default=[], metavar="FILE.jsonl",
                       help="also report the share of these rows flagged (never trained on)")
        p.add_argument("--cached-only", action="store_true",
                       help="leave out dataset rows whose features are not cached yet")
        p.add_argument("--report", metavar="FILE.md", help="also write the Markdown report")
        p.add_argument("--json-out", metavar="FILE", help="also write the report as JSON")
        if name == "train":
            p.add_argument("--head-out", required=True, metavar="FILE.npz",
                           help="where the head trained on everything is written")
        p.set_defaults(func=cmd_detector)
    sp = dsub.add_parser("set-spans", help="record span pooling in a head's meta (the model "
                         "built from it then scores spans as well as whole windows)")
    sp.add_argument("--head", required=True, metavar="FILE.npz",
                    help="the head file whose meta is changed in place")
    sp.add_argument("--off", action="store_true", help="remove it (whole windows only)")
    sp.set_defaults(func=cmd_set_spans)
    pp = dsub.add_parser("padding", help="share of attacks a built model blocks with benign "
                         "padding before/after/around them")
    pp.add_argument("--model", required=True, metavar="DIR",
                    help="a built model directory (model.onnx, tokenizer, meta)")
    pp.add_argument("--prefilter", metavar="DIR", help="score through this fast model first")
    pp.add_argument("--attacks", required=True, metavar="FILE.jsonl",
                    help="attack rows ({\"text\": ...}) to pad")
    pp.add_argument("--pad", required=True, metavar="FILE.jsonl",
                    help="benign rows whose words pad the attacks (not training text)")
    pp.set_defaults(func=cmd_padding)
    lx = dsub.add_parser("lexical", help="cross-source run of the lexical detector (hashed "
                         "n-grams + logistic regression; measured, not shipped)")
    _common(lx)
    lx.add_argument("--folds", type=int, default=5, help="source folds (default 5)")
    lx.add_argument("--cap", type=int, default=500,
                    help="train on at most this many rows per source and label (default 500)")
    lx.add_argument("--no-written", action="store_true",
                    help="leave out the written rows (training/data/written.yaml)")
    lx.add_argument("--scores-out", metavar="FILE.jsonl",
                    help="also write each row's out-of-fold score (text, label, source, score)")
    lx.add_argument("--json-out", metavar="FILE", help="also write the report as JSON")
    lx.set_defaults(func=cmd_lexical)
    th = dsub.add_parser("threshold", help="choose the classifier threshold on many benign "
                         "sources and check it on each source left out (rows from `eval "
                         "--rows-out`)")
    th.add_argument("--rows", required=True, metavar="FILE.jsonl",
                    help="per-row scores written by `infershield eval --rows-out`")
    th.add_argument("--target-fpr", type=float, default=0.01,
                    help="share of benign rows the model may block (default 0.01)")
    th.add_argument("--floor", type=float, default=0.0,
                    help="never choose a threshold below this (default 0)")
    th.add_argument("--compare", type=float, default=0.95,
                    help="also report the policy at this threshold (default 0.95)")
    th.set_defaults(func=cmd_threshold)
    b = dsub.add_parser("baseline", help="the shipped head (whole windows) per source")
    _common(b)
    b.add_argument("--head", required=True, metavar="FILE.npz",
                   help="the head to score (e.g. python/infershield/models/injection_head.npz)")
    b.add_argument("--threshold", type=float,
                   help="threshold to report at (default: the head's own)")
    b.set_defaults(func=cmd_baseline)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True, metavar="FILE.jsonl",
                   help="labelled rows (repeat for several files)")
    p.add_argument("--cache", default="build/features", metavar="DIR",
                   help="where encoder features are memoised (default build/features)")


def cmd_detector(args: argparse.Namespace) -> int:
    from infershield.training.crossval import HeadRecipe
    from infershield.training.detector import cv_and_train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not 0.0 < args.target_fpr < 0.5:
        raise InvalidRequest("--target-fpr must be in (0, 0.5)")
    recipe = HeadRecipe(spans=not args.whole_windows, hidden=args.hidden, epochs=args.epochs,
                        rounds=args.rounds, label_smoothing=args.label_smoothing)
    rep, head, md = cv_and_train([Path(d) for d in args.data], Path(args.cache), recipe,
                                 k=args.folds, target_fpr=args.target_fpr,
                                 written=not args.no_written, augment=not args.no_augment,
                                 final=args.detector_command == "train",
                                 cached=args.cached_only,
                                 probes=[Path(p) for p in args.probe])
    sys.stdout.write(md)
    if args.report:
        Path(args.report).write_text(md, encoding="utf-8")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    if args.detector_command == "train" and head is not None:
        head.save(Path(args.head_out))
        sys.stdout.write(f"head saved to {args.head_out} (threshold {head.threshold:.4f})\n")
    return 0


def cmd_lexical(args: argparse.Namespace) -> int:
    from infershield.training.crossval import format_cv
    from infershield.training.detector import corpus
    from infershield.training.lexical import cross_source

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    c = corpus([Path(d) for d in args.data], written=not args.no_written, augment=False)
    cv = cross_source(c.rows, c.always, k=args.folds, cap=args.cap)
    rep = cv.as_cross_source().report(shipped_threshold=0.5)
    sys.stdout.write(format_cv(rep, "lexical detector, cross-source"))
    if args.scores_out:
        with Path(args.scores_out).open("w", encoding="utf-8") as f:
            for r, s in zip(cv.rows, cv.scores.tolist(), strict=True):
                f.write(json.dumps({"text": r.text, "label": r.label, "source": r.source,
                                    "score": s}) + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
    return 0


def cmd_threshold(args: argparse.Namespace) -> int:
    from infershield.training.operating import at_threshold, choose, format_report, load_rows

    if not 0.0 < args.target_fpr < 0.5:
        raise InvalidRequest("--target-fpr must be in (0, 0.5)")
    rows = load_rows(Path(args.rows))
    rep = choose(rows, args.target_fpr, floor=args.floor)
    sys.stdout.write(format_report(rep, at_threshold(rows, args.compare)))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from infershield.training.detector import baseline_shipped

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.stdout.write(baseline_shipped([Path(d) for d in args.data], Path(args.cache),
                                      Path(args.head), args.threshold))
    return 0


def cmd_set_spans(args: argparse.Namespace) -> int:
    from infershield.detectors.head import Head
    from infershield.training.features import SHIP_SPANS

    path = Path(args.head)
    h = Head.load(path)
    meta = {k: v for k, v in h.meta.items() if not k.startswith("span_")}
    if not args.off:
        meta.update(SHIP_SPANS.as_meta())
    Head(h.w1, h.b1, h.w2, h.b2, h.labels, h.threshold, meta).save(path)
    sys.stdout.write(f"{path}: spans {'off' if args.off else SHIP_SPANS.as_meta()}\n")
    return 0


def cmd_padding(args: argparse.Namespace) -> int:
    from infershield.training.detector import padding_probe
    from infershield.training.training import load_jsonl

    attacks = [r.text for r in load_jsonl(Path(args.attacks), label=False)]
    pads = [r.text for r in load_jsonl(Path(args.pad), label=False)]
    res = padding_probe(Path(args.model), Path(args.prefilter) if args.prefilter else None,
                        attacks, pads)
    sys.stdout.write("| padding words | where | blocked |\n|---|---|---|\n")
    for r in res:
        sys.stdout.write(f"| {r['words']} | {r['where']} | {r['blocked']:.3f} |\n")
    return 0
