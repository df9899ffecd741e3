"""``mixed_script``: words that mix Latin letters with Cyrillic/Greek look-alikes.

"ignore" with Cyrillic U+0456, U+043E, U+0435 in place of i, o, e still reads as
"ignore" but slips past naive filters.
Words written wholly in Cyrillic or Greek are ordinary text and never count, nor do
non-look-alike letters next to Latin ones (``2πr``). The normalised text, with the
look-alikes folded to Latin, is what ``signatures`` scans in addition to the raw text.
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

    #: Block when at least this many mixed-script words occur (one can be a typo).
    min_words: int = bounded(2, ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


class MixedScriptCheck(AnalysisCheck):
    """Blocks text with several Latin/Cyrillic/Greek homoglyph words."""

    Options = MixedScriptOptions
    CATEGORY: ClassVar[str] = "obfuscation"
    REASON_BLOCK: ClassVar[str] = "words mixing Latin with Cyrillic/Greek look-alike letters"
    REASON_FEW: ClassVar[str] = "a mixed-script word below the threshold"

    options: MixedScriptOptions

    def _verdict(self, a: Analysis) -> Verdict:
        n = a.mixed_script_count
        if n == 0:
            return self.allow()
        details = (("mixed_words", str(n)), ("confusables", str(a.confusables)))
        if n >= self.options.min_words:
            score = min(1.0, 0.7 + 0.1 * (n - self.options.min_words))
            return self.block(
                self.REASON_BLOCK, score, categories=(self.CATEGORY,), details=details
            )
        return self.allow(self.REASON_FEW, 0.5 * n / self.options.min_words, details=details)
