"""``infershield redteam``: run a battery against a policy or a running endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from infershield.errors import ConfigError


def register(subparsers: Any) -> None:
    """Add the ``redteam`` command to the top-level parser."""
    from infershield.redteam.battery import SUITE_SEED, suite_names

    p = subparsers.add_parser(
        "redteam",
        help="send mutated attacks and a benign battery to a firewall; report catch rates",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--target", metavar="HOST:PORT", help="a running Triton/KServe-v2 gRPC endpoint"
    )
    where.add_argument(
        "--policy", metavar="FILE|NAME", help="a policy file or shipped policy name, in-process"
    )
    p.add_argument("--model", help="model name at --target (required with --target)")
    p.add_argument("--input", dest="input_name", help="BYTES input to fill (default: the first)")
    p.add_argument(
        "--suite", default="full", choices=suite_names(), help="which battery (default: full)"
    )
    p.add_argument(
        "--report", type=Path, help="write the Markdown report here (a PNG heat-map next to it)"
    )
    p.add_argument(
        "--attacks", type=Path, help="attack seeds YAML in the shipped format (default: shipped)"
    )
    p.add_argument("--json", dest="json_out", type=Path, help="write the figures as JSON here")
    p.add_argument(
        "--floors", type=Path, help="exit 1 naming each cell below its floor in this YAML file"
    )
    p.add_argument(
        "--batch-size", type=int, default=1, help="in-process batch (1: per-request latency)"
    )
    p.add_argument("--seed", type=int, default=SUITE_SEED, help="seed of the mutators' randomness")
    p.set_defaults(func=cmd_redteam)


def cmd_redteam(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Run the battery; print the summary; exit 1 when a floor is broken."""
    from infershield.redteam import run_suite
    from infershield.redteam.battery import load_attacks
    from infershield.redteam.report import check_floors, load_floors
    from infershield.redteam.targets import GrpcTarget, PolicyTarget, Target

    stdout = stdout or sys.stdout
    target: Target
    if args.target:
        if not args.model:
            raise ConfigError("--model: required with --target")
        target = GrpcTarget(args.target, args.model, input_name=args.input_name)
    else:
        target = PolicyTarget(args.policy, batch_size=args.batch_size)
    floors = load_floors(args.floors) if args.floors else None
    attacks = load_attacks(args.attacks) if args.attacks else None
    try:
        report = run_suite(target, args.suite, seed=args.seed, attacks=attacks)
    finally:
        target.close()
    heatmap = None
    if args.report:
        png = args.report.with_suffix(".png")
        if report.heatmap(png):
            heatmap = png.name
        args.report.write_text(report.markdown(heatmap), encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    d = report.to_dict()
    stdout.write(
        f"{d['target']}, suite {d['suite']}: {d['cases']} texts; "
        f"seeds blocked unmutated {d['eligible_seeds']}/{d['attack_seeds']}; "
        f"bypass {100 * d['bypass_overall']:.1f}%; benign blocked "
        f"{d['benign_blocked']}/{d['benign_total']}; latency p50 {d['latency_ms_p50']:.1f} ms, "
        f"p99 {d['latency_ms_p99']:.1f} ms\n"
    )
    for fam, rate in d["bypass_by_family"].items():
        stdout.write(f"  bypass {fam}: {100 * rate:.1f}%\n")
    if floors is not None:
        problems = check_floors(report, floors)
        for msg in problems:
            stdout.write(f"FLOOR {msg}\n")
        if problems:
            return 1
        stdout.write(f"all {len(floors['cells'])} floors hold\n")
    return 0
