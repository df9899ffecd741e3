"""Written training rows (expanded from ``data/written.yaml``) and adversarial augmentation.

The templates and fillers are data; this module only expands them and mutates attacks the
way evasions do (padding, leetspeak, spaced letters, homoglyphs, full-width, wrappers), so
the head learns that a mutated attack is still an attack. Everything is deterministic.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from infershield.training.training import Row

WRITTEN = "written"  # the source of every expanded row


def written_path() -> Path:
    return Path(str(resources.files("infershield.training") / "data" / "written.yaml"))


def load_written(path: Path | None = None, seed: int = 41) -> list[Row]:
    """Every family's ``n`` rows: templates cycled, fillers drawn at random (one value per
    filler name and text; deduplicated)."""
    spec: dict[str, Any] = yaml.safe_load((path or written_path()).read_text(encoding="utf-8"))
    fillers: dict[str, list[str]] = {k: [str(v) for v in vs]
                                     for k, vs in spec["fillers"].items()}
    rng = random.Random(seed)
    rows: list[Row] = []
    for fam in spec["families"]:
        templates = [str(t) for t in fam["templates"]]
        seen: set[str] = set()
        for i in range(int(fam["n"]) * 3):
            if len(seen) >= int(fam["n"]):
                break
            t = templates[i % len(templates)]
            pick = {name: rng.choice(vals) for name, vals in fillers.items()}
            text = _fill(t, pick)
            if text not in seen:
                seen.add(text)
                rows.append(Row(text, str(fam["label"]), f"{WRITTEN}:{fam['name']}"))
    return rows


def _fill(template: str, pick: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: pick[m.group(1)], template)


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})
_HOMO = str.maketrans({"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440",
                       "c": "\u0441", "i": "\u0456"})


def _leet(t: str, rng: random.Random) -> str:
    return "".join(c.translate(_LEET) if rng.random() < 0.7 else c for c in t)


def _spaced(t: str, rng: random.Random) -> str:
    sep = rng.choice([" ", ".", "-", " "])
    words = t.split(" ")
    k = min(len(words), rng.randint(2, 5))
    start = rng.randrange(0, len(words) - k + 1)
    words[start : start + k] = [sep.join(w) for w in words[start : start + k]]
    return " ".join(words)


def _homoglyph(t: str, rng: random.Random) -> str:
    return "".join(c.translate(_HOMO) if rng.random() < 0.5 else c for c in t)


def _fullwidth(t: str, rng: random.Random) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in t)


def _case(t: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in t)


def _wrap(t: str, rng: random.Random) -> str:
    forms = [
        lambda s: '{"role": "user", "content": "' + s.replace('"', "'") + '"}',
        lambda s: "```\n" + s + "\n```",
        lambda s: "<!-- " + s + " -->",
        lambda s: "> " + s,
        lambda s: "## Task\n\n" + s + "\n",
        lambda s: "<data>\n" + s + "\n</data>",
    ]
    f: Callable[[str], str] = rng.choice(forms)
    return f(t)


def _pad(t: str, rng: random.Random, pads: Sequence[str]) -> str:
    before = " ".join(rng.sample(list(pads), k=min(len(pads), rng.randint(1, 6))))
    after = " ".join(rng.sample(list(pads), k=min(len(pads), rng.randint(0, 4))))
    where = rng.random()
    if where < 0.4:
        return f"{before} {t}"
    if where < 0.7:
        return f"{t} {before}"
    return f"{before} {t} {after}".strip()


MUTATORS: dict[str, Callable[[str, random.Random], str]] = {
    "leet": _leet, "spaced": _spaced, "homoglyph": _homoglyph, "fullwidth": _fullwidth,
    "case": _case, "wrap": _wrap,
}


def mutate(rows: Sequence[Row], pads: Sequence[str], *, per_row: int = 1, seed: int = 7,
           max_chars: int = 1500) -> list[Row]:
    """Mutated copies of attack ``rows`` (same label and source): padding with ``pads``
    (benign sentences), alone or combined with one character-level mutator or a wrapper."""
    rng = random.Random(seed)
    out: list[Row] = []
    names = sorted(MUTATORS)
    for r in rows:
        if r.label not in ("injection", "jailbreak") or len(r.text) > max_chars:
            continue
        for _ in range(per_row):
            kind = rng.random()
            t = r.text
            if kind < 0.45:
                t = _pad(t, rng, pads)
            elif kind < 0.8:
                t = MUTATORS[rng.choice(names)](t, rng)
            else:
                t = _pad(MUTATORS[rng.choice(names)](t, rng), rng, pads)
            out.append(Row(t, r.label, r.source))
    return out


def padding_sentences(rows: Sequence[Row], *, n: int = 400, seed: int = 3) -> list[str]:
    """Short benign sentences to pad attacks with, taken from ``rows`` (benign, < 200 chars)."""
    pool = [r.text.strip() for r in rows if r.label == "benign" and 20 <= len(r.text) < 200
            and "\n" not in r.text]
    rng = random.Random(seed)
    return rng.sample(pool, k=min(n, len(pool)))
