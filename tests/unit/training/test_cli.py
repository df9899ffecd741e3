"""The ``models`` and ``eval`` commands keep their names and flags after the move."""

from __future__ import annotations

import pytest

from infershield.cli import build_parser
from infershield.detectors import cli as build_cli
from infershield.training import cli as training_cli


@pytest.mark.parametrize(("argv", "func"), [
    (["models", "build", "--force", "--fp16"], build_cli.cmd_models_build),
    (["models", "train", "--data", "x.jsonl", "--with-examples", "--seeds", "2"],
     training_cli.cmd_models_train),
    (["models", "finetune", "--data", "x.jsonl", "--with-multilingual", "--layers", "6",
      "--teacher", "m", "--distill-weight", "0.8"], training_cli.cmd_models_finetune),
    (["models", "calibrate-prefilter", "--data", "x.jsonl", "--max-loss", "0.01"],
     training_cli.cmd_models_calibrate_prefilter),
    (["eval", "--jsonl", "x.jsonl", "--split", "dev"], training_cli.cmd_eval),
])
def test_commands_resolve_to_their_package(argv: list[str], func: object) -> None:
    assert build_parser().parse_args(argv).func is func
