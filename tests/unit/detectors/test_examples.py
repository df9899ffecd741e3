"""The hand-written training rows never repeat a test fixture (we must not train on tests)."""

from __future__ import annotations

import json
from pathlib import Path

from infershield.detectors.examples import examples, multilingual_examples

DATA = Path(__file__).parents[2] / "data"


def _norm(t: str) -> str:
    return " ".join(t.lower().split())


def test_no_training_example_is_a_fixture_text() -> None:
    fixtures = {_norm(json.loads(line)["text"])
                for f in DATA.glob("*.jsonl")
                for line in f.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert fixtures
    rows = [*examples(), *multilingual_examples()]
    leaked = [r.text for r in rows if _norm(r.text) in fixtures]
    assert not leaked, leaked[:5]


def test_quoted_attack_strings_appear_in_both_frames() -> None:
    rows = examples()
    quoted = [r for r in rows if "'" in r.text or '"' in r.text]
    labels = {r.label for r in quoted if "Ignore all previous instructions" in r.text
              or "Disregard everything" in r.text or "Override your system prompt" in r.text}
    assert {"benign", "injection"} <= labels
