"""Attack and benign examples we wrote ourselves, added to training for generalisation.

``train.jsonl`` has few *direct* injections and no dedicated hard negatives, so these rows
cover instruction overrides, prompt extraction, persona jailbreaks, delimiter and role
spoofing in many languages, and benign texts that talk about security, prompts or "ignoring"
things. They live as JSONL under ``training/data/`` (``examples.jsonl``: English plus a few
languages; ``multilingual.jsonl``: multilingual benign rows, attacks and document-embedded
injections). Nothing there is copied from the test files under ``tests/data``.
"""

from __future__ import annotations

from pathlib import Path

from infershield.training.training import Row, load_jsonl

SOURCE = "infershield:examples"
DATA_DIR = Path(__file__).parent / "data"


def load_examples(name: str) -> list[Row]:
    """The rows of ``training/data/<name>.jsonl``, with ``source`` set to :data:`SOURCE`."""
    return [Row(r.text, r.label, SOURCE) for r in load_jsonl(DATA_DIR / f"{name}.jsonl")]


def examples() -> list[Row]:
    """The hand-written rows (attacks labelled injection/jailbreak, benign hard negatives)."""
    return load_examples("examples")


def multilingual_examples() -> list[Row]:
    """Multilingual benign rows, multilingual attacks and document-embedded injections."""
    return load_examples("multilingual")
