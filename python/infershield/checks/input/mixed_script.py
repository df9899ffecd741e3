"""``mixed_script``: words that mix Latin letters with Cyrillic/Greek look-alikes.

"ignore" with Cyrillic U+0456, U+043E, U+0435 in place of i, o, e still reads as
"ignore" but slips past naive filters.
Words written wholly in Cyrillic or Greek are ordinary text and never count, nor do
non-look-alike letters next to Latin ones (``2πr``). The canonical view, with the
look-alikes folded to Latin, is what ``signatures`` (and the classifier) judge next to the
raw text, so by default this check only scores: homoglyphs in benign text are allowed, an
attack spelled with them is caught by its content. ``min_words`` opts into blocking by form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infershield.checks.analysis import AnalysisCheck
from infershield.config import bounded, check_bounds
from infershield.native import Analysis
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class MixedScriptOptions:
    """Options of the ``mixed_script`` check."""

    #: Block when at least this many mixed-script words occur; None (the default) never
    #: blocks on form alone and only scores.
    min_words: int | None = bounded(None, ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


class MixedScriptCheck(AnalysisCheck):
    """Blocks text with several Latin/Cyrillic/Greek homoglyph words."""

    Options = MixedScriptOptions
    CATEGORY: ClassVar[str] = "obfuscation"
    REASON_BLOCK: ClassVar[str] = "words mixing Latin with Cyrillic/Greek look-alike letters"
    REASON_FEW: ClassVar[str] = "mixed-script words (folded in the canonical view)"

    options: MixedScriptOptions

    def _verdict(self, a: Analysis) -> Verdict:
        n = a.mixed_script_count
        if n == 0:
            return self.allow()
        details = (("mixed_words", str(n)), ("confusables", str(a.confusables)))
        limit = self.options.min_words
        if limit is not None and n >= limit:
            score = min(1.0, 0.7 + 0.1 * (n - limit))
            return self.block(
                self.REASON_BLOCK, score, categories=(self.CATEGORY,), details=details
            )
        return self.allow(self.REASON_FEW, min(0.4, 0.2 * n), details=details)
