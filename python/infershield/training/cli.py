"""``infershield models train|finetune|calibrate-prefilter`` and ``infershield eval``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infershield.cli_args import add_config_flag
from infershield.errors import InvalidRequest

if TYPE_CHECKING:
    from infershield.config import Config
    from infershield.detectors.head import Head
    from infershield.pipeline import Pipeline
    from infershield.training.training import Row

#: The padding target (characters) of a ``--short-pad`` copy: pool sentences are added until
#: it is reached, so a lead-in or tail is a sentence or two.
SHORT_PAD_CHARS = (30, 160)


def register_models(msub: Any) -> None:
    """Add ``models train|finetune|calibrate-prefilter`` to the ``models`` subcommand."""
    train = msub.add_parser("train", help='retrain the head on {"text","label"} JSONL rows')
    _add_data_args(train)
    train.add_argument("--seeds", type=int, default=1,
                       help="average this many MLPs trained with seeds 0..N-1 (default 1)")
    train.add_argument("--epochs", type=int, default=60, help="passes over the data (default 60)")
    train.add_argument("--label-smoothing", type=float, default=0.0,
                       help="share of each target spread over both classes, in [0, 1) (default 0)")
    train.add_argument("--embed-cache", metavar="DIR",
                       help="memoise window embeddings here (re-runs skip the encoder)")
    train.set_defaults(func=cmd_models_train)

    ft = msub.add_parser("finetune", help="fine-tune the top encoder layers and the head on "
                         '{"text","label"} JSONL rows (needs torch; how the shipped model is made)')
    _add_data_args(ft)
    ft.add_argument("--layers", type=int, default=2, help="top encoder layers to train")
    ft.add_argument("--num-layers", type=int, default=0,
                    help="keep only the first N encoder layers (faster; default: all 6)")
    ft.add_argument("--epochs", type=int, default=2, help="passes over the data (default 2)")
    ft.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ft.add_argument("--device", default="cpu",
                    help='torch device to train on: "cpu" (default), "cuda" or "cuda:N"')
    ft.add_argument("--lr-encoder", type=float, default=4e-5,
                    help="learning rate of the top trained layer")
    ft.add_argument("--layer-decay", type=float, default=1.0,
                    help="each lower trained layer's learning rate is this times the one above")
    ft.add_argument("--attention-heads", type=int, default=0,
                    help="prune each trained layer to this many attention heads before "
                         "training (0: keep all)")
    ft.add_argument("--ffn-size", type=int, default=0,
                    help="prune each trained layer to this many FFN neurons (0: keep all)")
    ft.add_argument("--teacher", metavar="MODEL_DIR",
                    help="distil from this classifier too: its probability for each training "
                         "window is a second target (for a prefilter: the main model)")
    ft.add_argument("--distill-weight", type=float, default=0.5,
                    help="share of the loss that follows the teacher (0..1)")
    ft.add_argument("--benign-weight", type=float, default=1.0,
                    help="loss weight of benign rows (below 1: recall first, as for a prefilter)")
    ft.add_argument("--init-encoder", metavar="FILE.npz",
                    help="continue from these fine-tuned layers (an --encoder-out file)")
    ft.add_argument("--probe", action="append", default=[], metavar="FILE.jsonl",
                    help="rows to score after each epoch, for the log only (repeatable)")
    ft.add_argument("--init-head", metavar="FILE.npz",
                    help="head to start from (default: the shipped frozen-embedding head, "
                    "infershield/models/frozen_head.npz)")
    ft.add_argument("--encoder-out", metavar="FILE.npz",
                    help="also save the fine-tuned layers (float16) here")
    ft.add_argument("--with-written", action="store_true",
                    help="add the written attacks and benign twins (training/data/written.yaml)")
    ft.add_argument("--long-pad", type=int, default=0, metavar="N",
                    help="add N copies of each short row buried in 40-250 tokens of benign "
                         "sentences from the training rows (every short attack, half the "
                         "short benign rows)")
    ft.add_argument("--short-pad", type=int, default=0, metavar="N",
                    help="add N copies of each short row with a benign sentence or two (at "
                         "least 30-160 characters) before, after or around it: a short lead-in "
                         "must not hide an instruction either (every short attack, half the "
                         "short benign rows)")
    ft.add_argument("--units", type=int, default=0, metavar="N",
                    help="add up to N sentence units of benign training rows as benign rows "
                         "of their own (for a model that scores units; default 0)")
    ft.add_argument("--pad-chars", type=int, nargs=2, default=[150, 1100], metavar=("MIN", "MAX"),
                    help="length range of each --long-pad padding in characters (default "
                         "150 1100: about 40-250 tokens)")
    ft.set_defaults(func=cmd_models_finetune)

    cal = msub.add_parser(
        "calibrate-prefilter", help="choose the fast prefilter's clearing cut on labelled rows "
        "(the highest cut that clears at most --max-loss of the attacks the main model catches)")
    cal.add_argument("--data", required=True, metavar="FILE.jsonl",
                     help='labelled rows, one {"text": ..., "label": ...} object per line')
    cal.add_argument("--split", choices=["all", "dev"], default="dev",
                     help="rows to calibrate on (default: the dev part of the split)")
    cal.add_argument("--max-loss", type=float, default=0.0025,
                     help="share of the main model's caught attacks the cut may clear")
    cal.add_argument("--main", metavar="DIR", help="main model directory (default: shipped)")
    cal.add_argument("--fast", metavar="DIR", help="fast model directory (default: shipped)")
    cal.add_argument("--head", metavar="FILE.npz",
                     help="fast model head to record the cut in (its meta clear_below); "
                     "rebuild the model afterwards")
    add_config_flag(cal, "cache_dir")
    cal.set_defaults(func=cmd_models_calibrate_prefilter)



def register(sub: Any) -> None:
    """Add the ``eval`` subcommand to the top-level parser."""
    ev = sub.add_parser("eval", help="AUC / TPR@FPR / latency of model, rules and both")
    ev.add_argument("--jsonl", metavar="FILE",
                    help='labelled rows, one {"text": ..., "label": ...[, "source": ...]} object '
                         "per line (labels: injection, jailbreak, benign, harmful)")
    ev.add_argument("--attacks", action="append", default=[], metavar="FILE",
                    help='rows of {"text": ...}, each an attack (label injection unless the row '
                         "has a label); repeatable")
    ev.add_argument("--benign", action="append", default=[], metavar="FILE",
                    help='rows of {"text": ...}, each benign (unless the row has a label); '
                         "repeatable")
    add_config_flag(ev, "the policy to evaluate")
    ev.add_argument("--split", choices=["all", "dev", "train"], default="all",
                    help="evaluate only the dev (or train) part of the deterministic split")
    ev.add_argument("--json-out", metavar="FILE", help="also write the report as JSON")
    ev.add_argument("--rows-out", metavar="FILE.jsonl",
                    help="also write each row's source, label, model score and rules verdict "
                         "(input of `infershield detector threshold`)")
    ev.set_defaults(func=cmd_eval)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    """The data, split, output and example flags that ``train`` and ``finetune`` share."""
    p.add_argument("--data", required=True, action="append", metavar="FILE.jsonl",
                   help='training rows, one {"text": ..., "label": ...} object per line '
                        "(repeatable: the files are read in order)")
    p.add_argument("--exclude-source", action="append", default=[], metavar="PREFIX",
                   help="leave out rows whose source starts with PREFIX (repeatable), e.g. "
                        "to score those sources afterwards as never trained on")
    p.add_argument("--per-source", type=int, default=0, metavar="N",
                   help="at most N rows of each (source repository, label), a seeded sample "
                        "(default 0: all)")
    p.add_argument("--out", metavar="DIR", help="model directory to write "
                   "(default: <cache>/models/injection-minilm-custom)")
    add_config_flag(p, "cache_dir")
    p.add_argument("--with-examples", action="store_true",
                   help="add the project's hand-written attack/benign examples")
    p.add_argument("--with-multilingual", action="store_true",
                   help="also add the multilingual benign/attack and document-injection examples")
    p.add_argument("--dev-frac", type=float, default=0.2,
                   help="share of rows held out (deterministically) to pick the threshold")
    p.add_argument("--target-fpr", type=float, default=0.005,
                   help="dev-split FPR the recommended threshold is chosen for")
    p.add_argument("--head-out", metavar="FILE.npz", help="also save the head weights here")


def _load_data(args: argparse.Namespace) -> list[Row]:
    """The ``--data`` files' rows, less ``--exclude-source``, capped by ``--per-source``."""
    from infershield.training.mix import select_rows
    from infershield.training.training import load_jsonl

    if args.per_source < 0:
        raise InvalidRequest("--per-source must be >= 0")
    rows = [r for path in args.data for r in load_jsonl(Path(path))]
    rows = select_rows(rows, exclude=args.exclude_source, per_source=args.per_source)
    if not rows:
        raise InvalidRequest("no training rows left after --exclude-source")
    return rows


def _outputs(args: argparse.Namespace, cache_path: Path) -> tuple[Path, Path]:
    """The model directory to write (created) and where the head goes."""
    from infershield.detectors.models import models_dir

    out = Path(args.out) if args.out else models_dir(cache_path) / "injection-minilm-custom"
    out.mkdir(parents=True, exist_ok=True)
    return out, Path(args.head_out) if args.head_out else out / "head.npz"


def cmd_models_train(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.detectors.models import ensure_embedding_model
    from infershield.training.examples import examples, multilingual_examples
    from infershield.training.training import train_on_rows

    if not 0.0 <= args.dev_frac < 1.0:
        raise InvalidRequest("--dev-frac must be in [0, 1)")
    if args.seeds < 1 or args.epochs < 1 or not 0.0 <= args.label_smoothing < 1.0:
        raise InvalidRequest("--seeds and --epochs must be >= 1, --label-smoothing in [0, 1)")
    cfg = load_config(args.config)
    rows = _load_data(args)
    emb_dir = ensure_embedding_model(cfg.cache_path)
    head, metrics = train_on_rows(
        rows, emb_dir, dev_frac=args.dev_frac, target_fpr=args.target_fpr,
        extra=[*(examples() if args.with_examples else ()),
               *(multilingual_examples() if args.with_multilingual else ())],
        epochs=args.epochs, seeds=tuple(range(args.seeds)), label_smoothing=args.label_smoothing,
        cache_dir=Path(args.embed_cache) if args.embed_cache else None,
    )
    out, head_path = _outputs(args, cfg.cache_path)
    head.save(head_path)
    _build_into(out, head_path, None)
    print(json.dumps({"model_dir": str(out), "head": str(head_path), "threshold": head.threshold,
                      **metrics}, indent=2))
    return 0


def _build_into(out: Path, head_path: Path, encoder_path: Path | None) -> None:
    """Export the classifier into ``out`` next to the weight files already there."""
    from infershield.detectors.models import build_classifier

    staging = out / "model"
    build_classifier(staging, head_path, encoder_path)
    for f in staging.iterdir():
        f.replace(out / f.name)
    staging.rmdir()


def _rules_pipeline(cfg: Config) -> Pipeline:
    """The input checks of ``cfg``'s policy less the classifiers: what blocks by rule."""
    from infershield.policy import build_pipeline

    specs = [s for s in cfg.policy.input if s.enabled and s.type != "classifier"]
    return build_pipeline(specs, "input", cfg, fail_fast=False)


def cmd_models_finetune(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.detectors.bert import load_bert, load_encoder, minilm_dir, save_encoder
    from infershield.detectors.head import Head
    from infershield.detectors.models import frozen_head_path
    from infershield.training.examples import examples, multilingual_examples
    from infershield.training.finetune import FinetuneConfig, finetune
    from infershield.training.training import Row, load_jsonl

    if not 0.0 <= args.dev_frac < 1.0 or not 0.0 < args.target_fpr < 1.0:
        raise InvalidRequest("--dev-frac must be in [0, 1) and --target-fpr in (0, 1)")
    total = args.num_layers or 6
    if not args.lr_encoder > 0 or not 0 < args.layer_decay <= 1 or not args.benign_weight > 0:
        raise InvalidRequest("--lr-encoder and --benign-weight must be > 0 and --layer-decay "
                             "in (0, 1]")
    if args.epochs < 1 or not 1 <= total <= 6 or not 1 <= args.layers <= total:
        raise InvalidRequest("--epochs must be >= 1, --num-layers in 1..6 and --layers in "
                             "1..num-layers")
    if args.attention_heads < 0 or args.ffn_size < 0:
        raise InvalidRequest("--attention-heads and --ffn-size must be >= 0")
    if not 0.0 <= args.distill_weight <= 1.0:
        raise InvalidRequest("--distill-weight must be in [0, 1]")
    if args.units < 0:
        raise InvalidRequest("--units must be >= 0")
    if args.teacher and not Path(args.teacher, "model.onnx").is_file():
        raise InvalidRequest(f"--teacher {args.teacher}: no model.onnx there")
    cfg = load_config(args.config)
    rows = _load_data(args)
    if args.with_written:
        from infershield.training.written import load_written

        rows += load_written()
    if args.long_pad < 0 or args.short_pad < 0:
        raise InvalidRequest("--long-pad and --short-pad must be >= 0")
    if args.long_pad or args.short_pad:
        from infershield.training.mix import long_pad, padding_pool
        from infershield.training.training import split_dev

        lo, hi = args.pad_chars
        if not 0 < lo <= hi:
            raise InvalidRequest("--pad-chars needs 0 < MIN <= MAX")
        # Only the training side is padded, and a copy is kept only where the dev split
        # (a hash of its text) puts it on the training side too: the dev rows pick the
        # threshold and report the metrics, so none of their text may be trained on.
        train = split_dev(rows, args.dev_frac)[0]
        pool = padding_pool(train)
        if not pool:
            raise InvalidRequest("--long-pad/--short-pad need benign training rows with "
                                 "sentences of 30-300 characters to pad with")
        padded = []
        if args.long_pad:
            padded += long_pad(train, pool, per_row=args.long_pad, seed=args.seed + 13,
                               min_chars=lo, max_chars=hi, benign_share=0.5)
        if args.short_pad:
            padded += long_pad(train, pool, per_row=args.short_pad, seed=args.seed + 29,
                               min_chars=SHORT_PAD_CHARS[0], max_chars=SHORT_PAD_CHARS[1],
                               benign_share=0.5)
        rows += split_dev(padded, args.dev_frac)[0]
    if args.units:
        from infershield.checks.base import CheckContext
        from infershield.training.mix import benign_units
        from infershield.training.training import split_dev

        # As with --long-pad: only units of training-side rows that stay on the training side.
        train = split_dev(rows, args.dev_frac)[0]
        rules = _rules_pipeline(cfg)
        try:
            units = benign_units(train, n=args.units, seed=args.seed + 17,
                                 keep=lambda texts: [not r.blocked for r in rules.run_batch(
                                     [CheckContext(text=t) for t in texts])])
        finally:
            rules.close()
        rows += split_dev(units, args.dev_frac)[0]
    # Probes need only a text: unlabelled fixture files (hard negatives, attacks) work as is.
    probes = {Path(p).stem: [Row(r.text, "probe") for r in load_jsonl(Path(p), label=False)]
              for p in args.probe}
    result = finetune(
        rows, init_head=Head.load(Path(args.init_head) if args.init_head else frozen_head_path()),
        init_encoder=load_encoder(Path(args.init_encoder)) if args.init_encoder else None,
        probes=probes, teacher=Path(args.teacher) if args.teacher else None,
        extra=[*(examples() if args.with_examples else ()),
               *(multilingual_examples() if args.with_multilingual else ())],
        config=FinetuneConfig(trainable_layers=args.layers, num_layers=args.num_layers,
                              epochs=args.epochs, seed=args.seed, device=args.device,
                              lr_encoder=args.lr_encoder, layer_decay=args.layer_decay,
                              benign_weight=args.benign_weight,
                              attention_heads=args.attention_heads, ffn_size=args.ffn_size,
                              distill_weight=args.distill_weight,
                              dev_frac=args.dev_frac, target_fpr=args.target_fpr),
    )
    out, head_path = _outputs(args, cfg.cache_path)
    enc_path = Path(args.encoder_out) if args.encoder_out else out / "encoder.npz"
    result.head.save(head_path)
    # Matrices as int8 deltas against the installed base: half the bytes of float16.
    save_encoder(enc_path, result.encoder, base=load_bert(minilm_dir())[1])
    _build_into(out, head_path, enc_path)
    # Training scores at most max_windows windows per text; the runtime scores them all, so
    # the threshold (target FPR on the dev benign rows) is measured again on the built model.
    head = _rethreshold(out, Head.load(head_path), rows, args.dev_frac, args.target_fpr)
    head.save(head_path)
    _build_into(out, head_path, enc_path)
    print(json.dumps({"model_dir": str(out), "head": str(head_path), "encoder": str(enc_path),
                      "threshold": head.threshold, **head.meta}, indent=2))
    return 0


def _rethreshold(model_dir: Path, head: Head, rows: Sequence[Row], dev_frac: float,
                 target_fpr: float) -> Head:
    """``head`` with the threshold and dev metrics of the built model in ``model_dir``."""
    import numpy as np

    from infershield.detectors.head import Head
    from infershield.detectors.runtime import RuntimeOptions, SequenceClassifier
    from infershield.training.training import binary_target, dev_metrics, split_dev

    dev = [r for r in split_dev(rows, dev_frac)[1] if binary_target(r.label) is not None]
    if not dev:
        return head
    y = np.array([binary_target(r.label) for r in dev], np.int64)
    scores = SequenceClassifier(model_dir, RuntimeOptions(providers=("cpu",))).score(
        [r.text for r in dev])
    thr, metrics = dev_metrics(y, scores, target_fpr)
    meta = {**head.meta, **{k: f"{v:.4f}" for k, v in metrics.items()},
            "threshold_measured_with": "the built model, every window"}
    return Head(head.w1, head.b1, head.w2, head.b2, head.labels, thr, meta)


def cmd_models_calibrate_prefilter(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.detectors.head import Head
    from infershield.detectors.models import FAST_MODEL, ensure_shipped_model
    from infershield.detectors.runtime import (
        RuntimeOptions,
        SequenceClassifier,
        max_per_text,
        owners,
        shares_windows,
    )
    from infershield.training.evaluate import choose_prefilter_cut, window_keys
    from infershield.training.training import load_jsonl, split_dev

    if not 0.0 <= args.max_loss < 1.0:
        raise InvalidRequest("--max-loss must be in [0, 1)")
    cfg = load_config(args.config)
    rows = load_jsonl(Path(args.data))
    if args.split == "dev":
        rows = split_dev(rows)[1]
    main_dir = Path(args.main) if args.main else ensure_shipped_model(cfg.cache_path)
    fast_dir = Path(args.fast) if args.fast else ensure_shipped_model(cfg.cache_path,
                                                                      name=FAST_MODEL)
    texts = [r.text for r in rows]
    # Calibration is offline: every window of every row is scored, however long the row.
    opts = RuntimeOptions(max_windows=1_000_000)
    main, fast = SequenceClassifier(main_dir, opts), SequenceClassifier(fast_dir, opts)
    threshold = float(main.meta.get("threshold", 0.5))
    if shares_windows(fast, main):
        # The cascade clears window by window: key each text by the windows that matter.
        per_text = main.windows_batch(texts)
        flat = [w for ws in per_text for w in ws]
        owner = owners([len(ws) for ws in per_text])
        main_w = main.window_probs(flat)
        main_scores = max_per_text(main_w, owner, len(texts))
        keys = window_keys(fast.window_probs(flat), main_w, owner, len(texts), threshold)
    else:
        keys, main_scores = fast.score(texts), main.score(texts)
    cut = choose_prefilter_cut(keys, main_scores, [r.label for r in rows], threshold,
                               args.max_loss)
    if args.head:
        head = Head.load(Path(args.head))
        Head(head.w1, head.b1, head.w2, head.b2, head.labels, head.threshold,
             {**head.meta, "clear_below": f"{cut.clear_below:.6g}"}).save(Path(args.head))
    print(json.dumps({"rows": len(rows), "main_threshold": threshold, **cut.as_dict()},
                     indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from infershield.config import load_config
    from infershield.training.evaluate import evaluate, format_report
    from infershield.training.training import Row, load_jsonl, split_dev

    if not (args.jsonl or args.attacks or args.benign):
        raise InvalidRequest("eval needs rows: --jsonl, --attacks or --benign")
    rows = load_jsonl(Path(args.jsonl)) if args.jsonl else []
    for label, files in (("injection", args.attacks), ("benign", args.benign)):
        for f in files:
            # Unlabelled fixture files: the flag gives the label, the file name the source.
            rows += [Row(r.text, r.label or label, r.source or Path(f).name)
                     for r in load_jsonl(Path(f), label=False)]
    if args.split != "all":
        train, dev = split_dev(rows)
        rows = dev if args.split == "dev" else train
    report = evaluate(rows, load_config(args.config),
                      rows_out=Path(args.rows_out) if args.rows_out else None)
    sys.stdout.write(format_report(report) + "\n")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0
