"""The hand-written training rows never repeat a test fixture (we must not train on tests)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from infershield.training.examples import SOURCE, examples, multilingual_examples
from infershield.training.training import Row

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


# Counts, labels and a digest of the rows the former in-code generator produced (seeds 13 and
# 29): moving the examples into data files must not change what a model is trained on.
@pytest.mark.parametrize(("load", "counts", "digest"), [
    (examples, {"benign": 447, "injection": 172, "jailbreak": 42}, "d169944586410e71"),
    (multilingual_examples, {"benign": 193, "injection": 37, "jailbreak": 10}, "a03993d4ab1794a1"),
])
def test_example_files_hold_the_generated_rows(
    load: Callable[[], list[Row]], counts: dict[str, int], digest: str
) -> None:
    rows = load()
    assert Counter(r.label for r in rows) == counts
    assert {r.source for r in rows} == {SOURCE}
    text = "\n".join(f"{r.label}\t{r.text}" for r in rows)
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest
