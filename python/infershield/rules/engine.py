"""Signature matching over every view of a text: raw, normalised, hidden tag text, decoded blobs.

Shared by the ``signatures`` check and ``infershield rules check`` so the examples in the
packs are tested exactly the way production text is scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infershield.errors import ConfigError
from infershield.rules import Rule


def text_views(text: str, analysis: Any | None, *, normalized: bool, decoded: bool) -> list[str]:
    """The distinct, non-empty texts to scan for one input.

    ``analysis`` is the native :func:`~infershield.native.analyze` result (or None to scan
    the raw text only). Duplicates are dropped: the normalised form often equals the raw one.
    """
    views = [text]
    if analysis is not None:
        if normalized:
            views.append(analysis.normalized)
        if decoded:
            views.append(analysis.tag_text)
            views.extend(b.decoded for b in analysis.blobs)
    seen: dict[str, None] = {}
    for v in views:
        if v:
            seen.setdefault(v, None)
    return list(seen)


class SignatureEngine:
    """One compiled Hyperscan database for a set of signature rules."""

    def __init__(
        self,
        rules: Sequence[Rule],
        cache_dir: Path | None = None,
        *,
        normalized: bool = True,
        decoded: bool = True,
    ) -> None:
        from infershield.native import Matcher, PatternError

        if not rules:
            raise ConfigError("no signature rules selected")
        spans = [r.id for r in rules if r.mode != "signature"]
        if spans:
            raise ConfigError(f"rules {spans} are span rules; use the pii/secrets checks")
        self.rules = tuple(rules)
        self.normalized = normalized
        self.decoded = decoded
        try:
            self._matcher = Matcher([r.to_pattern() for r in rules], cache_dir=cache_dir)
        except PatternError as exc:
            msg = f"rule {exc.rule_id}: pattern does not compile: {exc.message}"
            raise ConfigError(msg) from None

    @property
    def wants_analysis(self) -> bool:
        return self.normalized or self.decoded

    def matched_batch(
        self, texts: Sequence[str], analyses: Sequence[Any | None] | None = None
    ) -> list[set[int]]:
        """Indices of the rules that match any view of each text, in one native call."""
        if analyses is None:
            analyses = [None] * len(texts)
        owners: list[int] = []
        flat: list[str] = []
        for i, (text, analysis) in enumerate(zip(texts, analyses, strict=True)):
            for view in text_views(
                text, analysis, normalized=self.normalized, decoded=self.decoded
            ):
                owners.append(i)
                flat.append(view)
        out: list[set[int]] = [set() for _ in texts]
        for owner, indices in zip(owners, self._matcher.matched_indices_batch(flat), strict=True):
            out[owner].update(indices)
        return out
