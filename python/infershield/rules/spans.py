"""Span detection for PII and secrets: Hyperscan candidates, Python validation, redaction.

Hyperscan reports every end offset of a match with its leftmost start (SOM). For each
(rule, start) we keep the longest end whose text passes the rule's validator, drop spans
covered by a longer one, and convert byte offsets into ``str`` positions so redaction is
correct for non-ASCII text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infershield.errors import ConfigError
from infershield.rules import SEVERITIES, Rule
from infershield.rules.validators import VALIDATOR_FUNCS

# A PEM block runs from its BEGIN line to the matching END line.
_PEM_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----")
# Card numbers may sit right after other digits ("order 12 4111 …"); retry from each group.
_GROUP_START = re.compile(r"(?<=[ \-])\d")


@dataclass(frozen=True, slots=True)
class Finding:
    """One validated span, in ``str`` positions of the scanned text."""

    rule_id: str
    kind: str
    category: str
    severity: str
    start: int
    end: int


class SpanDetector:
    """Compiles span rules once; finds validated spans in many texts per native call."""

    def __init__(self, rules: Sequence[Rule], cache_dir: Path | None = None) -> None:
        from infershield.native import Matcher, PatternError

        if not rules:
            raise ConfigError("no detectors selected")
        bad = [r.id for r in rules if r.mode != "span"]
        if bad:
            raise ConfigError(f"rules {bad} are not span rules (pack mode must be 'span')")
        self.rules = tuple(rules)
        self._order = {r.id: i for i, r in enumerate(rules)}
        try:
            self._matcher = Matcher([r.to_pattern() for r in rules], cache_dir=cache_dir)
        except PatternError as exc:
            msg = f"rule {exc.rule_id}: pattern does not compile: {exc.message}"
            raise ConfigError(msg) from None

    def find_batch(self, texts: Sequence[str]) -> list[list[Finding]]:
        """Validated findings per text, sorted by start, non-overlapping."""
        all_matches = self._matcher.scan_batch(list(texts))
        return [
            self._findings(text, matches) if matches else []
            for text, matches in zip(texts, all_matches, strict=True)
        ]

    def find(self, text: str) -> list[Finding]:
        return self.find_batch([text])[0]

    def _findings(self, text: str, matches: Sequence[Any]) -> list[Finding]:
        data = text.encode("utf-8", "surrogatepass")
        to_char = _offset_mapper(text, data)
        ends: dict[tuple[int, int], list[int]] = {}
        for m in matches:
            start = m.start if m.start is not None else 0
            ends.setdefault((m.index, start), []).append(m.end)
        found: list[Finding] = []
        for (index, start), end_list in ends.items():
            rule = self.rules[index]
            span = self._validated(rule, data, start, sorted(set(end_list), reverse=True))
            if span is None:
                continue
            s, e = to_char(span[0]), to_char(span[1])
            if rule.kind == "private_key":
                e = _pem_end(text, e)
            found.append(Finding(rule.id, rule.kind, rule.category, rule.severity, s, e))
        return _non_overlapping(found, self._order)

    @staticmethod
    def _validated(
        rule: Rule, data: bytes, start: int, ends_desc: list[int]
    ) -> tuple[int, int] | None:
        valid = VALIDATOR_FUNCS[rule.validator]
        for end in ends_desc:
            cand = data[start:end].decode("utf-8", "replace")
            if valid(cand):
                return start, end
            if rule.validator == "luhn":
                # The leftmost start may have swallowed a preceding digit group.
                for m in _GROUP_START.finditer(cand):
                    if valid(cand[m.start() :]):
                        return start + len(cand[: m.start()].encode("utf-8")), end
        return None


def _offset_mapper(text: str, data: bytes) -> Any:
    """Byte offset -> str index for ``text`` (identity for ASCII)."""
    if len(data) == len(text):
        return lambda off: off
    # Byte offset at which each character starts (surrogates take 3 bytes with surrogatepass).
    starts: list[int] = []
    pos = 0
    for ch in text:
        starts.append(pos)
        o = ord(ch)
        pos += 1 if o < 0x80 else 2 if o < 0x800 else 3 if o < 0x10000 else 4

    def to_char(off: int) -> int:
        return bisect.bisect_left(starts, off)

    return to_char


def _pem_end(text: str, begin_end: int) -> int:
    m = _PEM_END.search(text, begin_end)
    # No END line: redact to the end of the text rather than leak the key body.
    return m.end() if m else len(text)


def _non_overlapping(found: list[Finding], rule_order: dict[str, int]) -> list[Finding]:
    # Most severe first (a Stripe key inside a generic "api_key = ..." assignment is reported
    # as the Stripe key), then longest, then the rule listed first; keep a span only if it
    # overlaps none already kept.
    order = sorted(
        found,
        key=lambda f: (
            -SEVERITIES.index(f.severity), -(f.end - f.start), f.start, rule_order[f.rule_id]
        ),
    )
    kept: list[Finding] = []
    for f in order:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def redact(text: str, findings: Sequence[Finding]) -> str:
    """Replace each finding with ``[REDACTED:<kind>]`` (findings must not overlap)."""
    out: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        out.append(text[pos : f.start])
        out.append(f"[REDACTED:{f.kind}]")
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
