"""Span detection for PII and secrets: Hyperscan candidates, Python validation, redaction.

Hyperscan reports every end offset of a match with its leftmost start (SOM). For a rule with
an *exact* validator we keep, per (rule, start), the longest end whose text passes it. For a
rule with a *region* validator, the rule's overlapping matches are merged into one region
and the validator returns every finding inside it (two phone numbers in a row are two
findings). Byte offsets become ``str`` positions first, so redaction is exact for non-ASCII
text.

Overlaps are settled by one documented precedence (:data:`PRECEDENCE`): a span gets the type
ranked first, and when two findings overlap the winner's span grows to cover both, so no
part of either is left in clear.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infershield.errors import ConfigError
from infershield.rules.packs import Rule
from infershield.rules.validators import (
    DEFAULT_OPTIONS,
    REGION_VALIDATORS,
    VALIDATOR_FUNCS,
    ValidatorOptions,
)

#: Overlap precedence, first wins. Provider tokens (any kind not listed) rank where
#: ``"*"`` stands: a Stripe key inside ``api_key = "…"`` is a Stripe key, an IBAN is never
#: also a card number, an SSN is never also a phone number.
PRECEDENCE: tuple[str, ...] = (
    "private_key",
    "*",
    "jwt",
    "url_credentials",
    "aws_secret_key",
    "auth_header",
    "credential",
    "password",
    "iban",
    "credit_card",
    "us_ssn",
    "email",
    "ipv6",
    "ipv4",
    "phone",
    "postal_code",
)
#: Exact validators judged on the longest match only.
_LONGEST_ONLY = frozenset({"token", "github_crc", "discord", "jwt", "none"})
_RANK = {k: i for i, k in enumerate(PRECEDENCE)}


def precedence(kind: str) -> int:
    """Rank of ``kind`` in :data:`PRECEDENCE` (lower wins)."""
    return _RANK.get(kind, _RANK["*"])


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

    def __init__(
        self,
        rules: Sequence[Rule],
        cache_dir: Path | None = None,
        options: ValidatorOptions = DEFAULT_OPTIONS,
    ) -> None:
        from infershield.native import Matcher, PatternError

        if not rules:
            raise ConfigError("no detectors selected")
        bad = [r.id for r in rules if r.mode != "span"]
        if bad:
            raise ConfigError(f"rules {bad} are not span rules (pack mode must be 'span')")
        self.rules = tuple(rules)
        self.options = options
        self._region_rules = frozenset(
            i for i, r in enumerate(rules) if r.validator in REGION_VALIDATORS
        )
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
        # One read of each native match (attribute reads cross the binding).
        triples = [(m.index, m.start or 0, m.end) for m in matches]
        data = text.encode("utf-8", "surrogatepass")
        offsets = {t[1] for t in triples} | {t[2] for t in triples}
        to_char = _offset_mapper(text, data, offsets)
        exact: dict[tuple[int, int], list[int]] = {}
        regions: dict[int, list[tuple[int, int]]] = {}
        region_rules = self._region_rules
        for index, start, end in triples:
            if index in region_rules:
                regions.setdefault(index, []).append((start, end))
            else:
                exact.setdefault((index, start), []).append(end)
        found: list[Finding] = []
        for (index, start), end_list in exact.items():
            rule = self.rules[index]
            # A token is judged whole: a shorter prefix of "YOUR_TOKEN_HERE" is no token.
            longest = rule.validator in _LONGEST_ONLY
            ends = [max(end_list)] if longest else sorted(set(end_list))
            span = self._validated(rule, text, to_char(start), [to_char(e) for e in ends])
            if span is not None:
                found.append(_finding(rule, *span))
        for index, spans in regions.items():
            rule = self.rules[index]
            validate = REGION_VALIDATORS[rule.validator]
            for a, b in _merge(spans):
                for s, e in validate(text, to_char(a), to_char(b), self.options):
                    found.append(_finding(rule, s, e))
        return _resolve(found)

    @staticmethod
    def _validated(rule: Rule, text: str, start: int, ends: list[int]) -> tuple[int, int] | None:
        valid = VALIDATOR_FUNCS[rule.validator]
        for end in reversed(ends):
            if valid(text[start:end]):
                return start, end
        return None


def _finding(rule: Rule, start: int, end: int) -> Finding:
    return Finding(rule.id, rule.kind, rule.category, rule.severity, start, end)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _offset_mapper(text: str, data: bytes, offsets: set[int]) -> Any:
    """Byte offset -> str index for ``text`` (identity for ASCII), for the given offsets.
    They sit on character boundaries (Hyperscan runs in UTF-8 mode), so decoding the bytes
    between consecutive offsets and counting characters is exact; one pass, in C."""
    if len(data) == len(text):
        return lambda off: off
    table: dict[int, int] = {}
    prev, chars = 0, 0
    for off in sorted(offsets):
        chars += len(data[prev:off].decode("utf-8", "surrogatepass"))
        table[off] = chars
        prev = off
    return table.__getitem__


def _resolve(found: list[Finding]) -> list[Finding]:
    """One type per span: by :data:`PRECEDENCE`, then longest, then leftmost. A finding that
    overlaps a kept one is absorbed: the kept span grows to cover it (fail closed)."""
    order = sorted(found, key=lambda f: (precedence(f.kind), -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for f in order:
        hit = next((i for i, k in enumerate(kept) if f.start < k.end and k.start < f.end), None)
        if hit is None:
            kept.append(f)
        else:
            k = kept[hit]
            kept[hit] = Finding(
                k.rule_id, k.kind, k.category, k.severity, min(k.start, f.start), max(k.end, f.end)
            )
    # Growing may make two kept spans overlap: fold them into the earlier-ranked one.
    kept.sort(key=lambda f: f.start)
    out: list[Finding] = []
    for f in kept:
        if out and f.start < out[-1].end:
            a, b = out[-1], f
            win = a if precedence(a.kind) <= precedence(b.kind) else b
            out[-1] = Finding(
                win.rule_id, win.kind, win.category, win.severity, a.start, max(a.end, b.end)
            )
        else:
            out.append(f)
    return out


def placeholder_for(kind: str, value: str, key: bytes | None = None) -> str:
    """The text that replaces a finding: ``[REDACTED:<kind>]``, or with a key a stable keyed
    hash ``[<KIND>:<12 hex>]`` (HMAC-SHA256 of the value): equal values get equal
    placeholders, and without the key the value cannot be recovered by guessing."""
    if key is None:
        return f"[REDACTED:{kind}]"
    digest = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"[{kind.upper()}:{digest[:12]}]"


def redact(text: str, findings: Sequence[Finding], key: bytes | None = None) -> str:
    """Replace each finding with its placeholder (findings must not overlap)."""
    out: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        out.append(text[pos : f.start])
        out.append(placeholder_for(f.kind, text[f.start : f.end], key))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
