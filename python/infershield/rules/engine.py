"""Signature matching over every view of a text: raw, normalised, hidden tag text, decoded blobs.

Shared by the ``signatures`` check and ``infershield rules check`` so the examples in the
packs are tested exactly the way production text is scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infershield.errors import ConfigError
from infershield.native import normalize
from infershield.rules.packs import Rule

#: The names of the views, in the order they are scanned (the first view to match a rule is
#: the one a verdict records): the text as sent, the canonical view (folded, joined and
#: decoded in place, see :func:`infershield.native.normalize`), the ASCII hidden in Unicode
#: tag characters, each decoded base64/hex/url blob on its own, and the whole text read
#: backwards and in ROT13. The canonical view decodes reversed and ROT13 segments it can
#: recognise as such (English and a few European languages); the last two views cover the
#: rest (any script reversed, ROT13 of other languages) at the cost of two more scans.
VIEWS: tuple[str, ...] = ("original", "canonical", "hidden", "decoded", "reversed", "rot13")

_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)


def named_views(
    text: str, analysis: Any | None, *, normalized: bool, decoded: bool
) -> list[tuple[str, str]]:
    """The distinct, non-empty ``(view name, text)`` pairs to scan for one input.

    ``analysis`` is the native :func:`~infershield.native.analyze` result (or None to scan
    the raw text only). Duplicates are dropped, keeping the first name: the canonical view
    often equals the original.
    """
    views = [("original", text)]
    if analysis is not None:
        if normalized:
            views.append(("canonical", analysis.normalized))
        if decoded:
            views.append(("hidden", analysis.tag_text))
            views.extend(("decoded", b.decoded) for b in analysis.blobs)
            views.append(("reversed", text[::-1]))
            views.append(("rot13", analysis.normalized.translate(_ROT13)))
            # The original decoded too (the canonical view may have decoded part of it). ROT13
            # leaves accented letters alone, so non-ASCII text is decoded first, then folded
            # (one more native pass, only for such text).
            rot = text.translate(_ROT13)
            views.append(("rot13", rot if text.isascii() else normalize(rot)))
    seen: dict[str, str] = {}
    for name, v in views:
        if v:
            seen.setdefault(v, name)
    return [(name, v) for v, name in seen.items()]


def text_views(text: str, analysis: Any | None, *, normalized: bool, decoded: bool) -> list[str]:
    """The distinct texts of :func:`named_views`, without their names."""
    return [v for _, v in named_views(text, analysis, normalized=normalized, decoded=decoded)]


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
        return [set(m) for m in self.matched_views_batch(texts, analyses)]

    def matched_views_batch(
        self, texts: Sequence[str], analyses: Sequence[Any | None] | None = None
    ) -> list[dict[int, str]]:
        """For each text, every matching rule index mapped to the first view (a name in
        :data:`VIEWS`) that matched it, in one native call."""
        if analyses is None:
            analyses = [None] * len(texts)
        owners: list[tuple[int, str]] = []
        flat: list[str] = []
        for i, (text, analysis) in enumerate(zip(texts, analyses, strict=True)):
            for name, view in named_views(
                text, analysis, normalized=self.normalized, decoded=self.decoded
            ):
                owners.append((i, name))
                flat.append(view)
        out: list[dict[int, str]] = [{} for _ in texts]
        hits = self._matcher.matched_indices_batch(flat)
        for (owner, name), indices in zip(owners, hits, strict=True):
            for index in indices:
                out[owner].setdefault(index, name)
        return out
