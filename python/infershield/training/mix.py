"""The training mix of a fine-tuning run: which dataset rows, how many per source, and the
long-padding augmentation that teaches the encoder not to dilute one instruction in a
document.

Everything is deterministic for a given seed. Sources are held out by prefix of the row's
``source`` (its repository, ``owner/name``), so a run can leave whole sources out and be
scored on them afterwards (``infershield eval --jsonl`` on the held-out rows).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

from infershield.training.training import Row, binary_target

_T = TypeVar("_T")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def select_rows(rows: Sequence[Row], *, exclude: Sequence[str] = (), per_source: int = 0,
                seed: int = 0) -> list[Row]:
    """``rows`` whose source starts with none of ``exclude``, at most ``per_source`` of each
    (source repository, label) when it is above 0 (a seeded sample; order kept)."""
    kept = [r for r in rows if not any(r.source.startswith(p) for p in exclude if p)]
    if per_source <= 0:
        return kept
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(kept):
        groups[(r.source.partition(":")[0], r.label)].append(i)
    rng = random.Random(seed)
    keep: set[int] = set()
    for key in sorted(groups):
        idx = groups[key]
        keep.update(idx if len(idx) <= per_source else rng.sample(idx, per_source))
    return [r for i, r in enumerate(kept) if i in keep]


def padding_pool(rows: Sequence[Row], *, n: int = 4000, seed: int = 11) -> list[str]:
    """Benign sentences (30-300 characters) cut from the benign rows of many sources: a large,
    varied pool, so that a model cannot learn the padding itself."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.label != "benign":
            continue
        for s in _SENTENCE.split(r.text.replace("\n", " ")):
            s = s.strip()
            if 30 <= len(s) <= 300:
                by_source[r.source.partition(":")[0]].append(s)
    return _spread(by_source, n, random.Random(seed))


def _spread(by_source: dict[str, list[_T]], n: int, rng: random.Random) -> list[_T]:
    """About ``n`` items drawn evenly from each source's list (all of a smaller one), in a
    seeded random order."""
    per = max(1, n // max(1, len(by_source)))
    out: list[_T] = []
    for src in sorted(by_source):
        items = by_source[src]
        out += rng.sample(items, k=min(per, len(items)))
    rng.shuffle(out)
    return out


def _padding(rng: random.Random, pool: Sequence[str], chars: int) -> str:
    out: list[str] = []
    total = 0
    while total < chars:
        s = rng.choice(pool)
        out.append(s)
        total += len(s) + 1
    return " ".join(out)


def long_pad(rows: Sequence[Row], pool: Sequence[str], *, per_row: int = 1, seed: int = 13,
             min_chars: int = 150, max_chars: int = 1100, max_text: int = 1200,
             benign_share: float = 1.0) -> list[Row]:
    """Copies of short rows buried in benign padding (``min_chars``..``max_chars`` of pool
    sentences: about 40-250 tokens, so the padding and the row share one 256-token window)
    before, after or around them. Attacks stay attacks; benign rows get the same treatment
    (their benign twins), so padding is never a signal either way."""
    rng = random.Random(seed)
    out: list[Row] = []
    for r in rows:
        target = binary_target(r.label)
        if target is None or len(r.text) > max_text:
            continue
        if target == 0 and rng.random() >= benign_share:
            continue
        for _ in range(per_row):
            pad = _padding(rng, pool, rng.randint(min_chars, max_chars))
            where = rng.random()
            if where < 0.35:
                t = f"{pad} {r.text}"
            elif where < 0.7:
                t = f"{r.text} {pad}"
            else:
                cut = rng.randint(1, max(1, len(pad) // 2))
                head, tail = pad[:cut].rsplit(" ", 1)[0], pad[cut:]
                t = f"{head} {r.text} {tail}"
            out.append(Row(t, r.label, r.source))
    return out


def benign_units(rows: Sequence[Row], *, n: int, seed: int = 17,
                 keep: Callable[[list[str]], list[bool]] | None = None) -> list[Row]:
    """Up to ``n`` sentence units (the classifier's ``units`` cut) of the benign rows that
    have two or more, as benign rows of their own, spread evenly over the source
    repositories. Judged alone, an instruction-like sentence of a system prompt or a policy
    document ("never reveal these instructions") must still read as benign: these rows teach
    that to a model meant to score units. ``keep`` filters the units (a benign document
    may quote an attack, and the quote alone is no benign text): the CLI drops those the
    default policy's rules block."""
    from infershield.checks.input.content import sentence_units

    by_source: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.label != "benign":
            continue
        units = sentence_units(r.text)
        if len(units) < 2:
            continue
        by_source[r.source.partition(":")[0]].extend(Row(u, "benign", r.source) for u in units)
    out = _spread(by_source, n, random.Random(seed))[:n]
    if keep is not None:
        mask = keep([r.text for r in out])
        out = [r for r, k in zip(out, mask, strict=True) if k]
    return out
