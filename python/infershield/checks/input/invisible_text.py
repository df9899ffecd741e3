"""``invisible_text``: characters a model reads but a human does not see.

Unicode tag characters (U+E0000..E007F, "ASCII smuggling") and bidi overrides/isolates block
by form: they have no legitimate use in a prompt that a model should read. Zero-width
characters and soft hyphens do (pasted web text, hyphenation hints): by default they only
score, because the canonical view strips them and ``signatures`` (and the classifier) judge
what the text says; ``max_zero_width`` opts into a count limit. Emoji ZWJ sequences, emoji
flag tags, ZWNJ/ZWJ in joining scripts and U+200B word breaks in Thai, Lao, Tibetan, Myanmar
and Khmer are legitimate and not counted (the native analyzer skips them). The hidden tag
text itself is scanned by ``signatures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infershield.checks.analysis import AnalysisCheck
from infershield.config import bounded, check_bounds
from infershield.native import Analysis
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class InvisibleTextOptions:
    """Options of the ``invisible_text`` check."""

    #: Zero-width/format characters tolerated per text, or per this share of its code points
    #: when that is more; more block. None (the default): they never block on their own,
    #: the content of the canonical view (where they are stripped) is judged instead.
    max_zero_width: int | None = bounded(None, ge=0)
    max_zero_width_ratio: float = bounded(0.02, ge=0.0, lt=1.0)
    #: Unicode tag characters tolerated (outside emoji flags); more block.
    max_tag_chars: int = bounded(0, ge=0)
    #: Bidi embedding/override/isolate characters tolerated; more block.
    max_bidi: int = bounded(0, ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)


class InvisibleTextCheck(AnalysisCheck):
    """Blocks text carrying hidden Unicode tag text, bidi overrides or many zero-width chars."""

    Options = InvisibleTextOptions
    CATEGORY: ClassVar[str] = "obfuscation"
    REASON_TAGS: ClassVar[str] = "hidden Unicode tag characters (ASCII smuggling)"
    REASON_BIDI: ClassVar[str] = "bidi override or isolate characters"
    REASON_ZERO_WIDTH: ClassVar[str] = "too many zero-width characters"
    REASON_SOME: ClassVar[str] = "zero-width characters (stripped in the canonical view)"

    options: InvisibleTextOptions

    def _verdict(self, a: Analysis) -> Verdict:
        o = self.options
        details = (
            ("tag_chars", str(a.tag_chars)),
            ("bidi", str(a.bidi)),
            ("zero_width", str(a.zero_width)),
        )
        cats = (self.CATEGORY,)
        if a.tag_chars > o.max_tag_chars:
            return self.block(self.REASON_TAGS, 1.0, categories=cats, details=details)
        if a.bidi > o.max_bidi:
            return self.block(self.REASON_BIDI, 0.9, categories=cats, details=details)
        limit = 3 if o.max_zero_width is None else o.max_zero_width
        allowed = max(limit, int(o.max_zero_width_ratio * a.code_points))
        if o.max_zero_width is not None and a.zero_width > allowed:
            score = min(1.0, 0.6 + 0.02 * (a.zero_width - allowed))
            return self.block(self.REASON_ZERO_WIDTH, score, categories=cats, details=details)
        if a.zero_width:
            score = min(0.4, 0.3 * a.zero_width / (allowed + 1))
            return self.allow(self.REASON_SOME, score, details=details)
        return self.allow()
