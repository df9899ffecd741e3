"""Our own secrets/PII battery (tests/data/span_battery.jsonl, written by
bench/data/make_span_battery.py): per type, every valid example is redacted as that type and
every near miss (bad checksum, placeholder, malformed address, date, version …) is left
alone, on the input stage as on the output stage."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from infershield.checks.base import CheckContext
from infershield.checks.output.pii import PiiCheck
from infershield.checks.output.secrets import SecretsCheck
from infershield.pipeline import Pipeline, Step
from infershield.verdict import Decision

BATTERY = Path(__file__).resolve().parents[3] / "data" / "span_battery.jsonl"
ROWS = [json.loads(line) for line in BATTERY.read_text(encoding="utf-8").splitlines()]
BY_KIND: dict[str, list[dict[str, str]]] = defaultdict(list)
for _row in ROWS:
    BY_KIND[_row["kind"]].append(_row)


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(
        [Step(SecretsCheck("secrets"), "block"), Step(PiiCheck("pii"), "block")], fail_fast=False
    )


def test_every_type_has_a_valid_example_and_two_near_misses() -> None:
    assert len(BY_KIND) >= 50
    for kind, rows in BY_KIND.items():
        assert sum(r["label"] == "pos" for r in rows) >= 1, kind
        assert sum(r["label"] == "neg" for r in rows) >= 2, kind


@pytest.mark.parametrize("kind", sorted(BY_KIND))
@pytest.mark.parametrize("stage", ["input", "output"])
def test_type(pipeline: Pipeline, kind: str, stage: str) -> None:
    for row in BY_KIND[kind]:
        res = pipeline.run(CheckContext(text=row["text"], stage=stage))  # type: ignore[arg-type]
        if row["label"] == "pos":
            assert res.decision is Decision.REDACT, row
            assert row["value"] not in res.text, (row, res.text)
            assert f"[REDACTED:{kind}]" in res.text, (row, res.text)
        else:
            assert res.decision is Decision.ALLOW, (row, res.text)
            assert res.text == row["text"]


def test_all_positives_in_one_text_are_all_redacted(pipeline: Pipeline) -> None:
    pos = [r for r in ROWS if r["label"] == "pos"]
    text = "\n".join(r["text"] for r in pos)
    res = pipeline.run(CheckContext(text=text, stage="output"))
    for r in pos:
        assert r["value"] not in res.text, r
