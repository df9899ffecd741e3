"""``repetition``: character and token flooding.

Long runs of one character and texts dominated by one token are used to push instructions
out of a model's context, to exhaust tokens, or to trigger degenerate outputs. The token
ratio only applies to texts with enough tokens, so short replies like "yes yes" pass, and
counts only tokens with a letter or digit, so the pipes of a markdown table are no flood.
Runs of spaces (table and code padding) have their own, larger limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from infershield.checks.analysis import AnalysisCheck
from infershield.config import bounded, check_bounds
from infershield.native import Analysis
from infershield.verdict import Verdict


@dataclass(frozen=True, kw_only=True)
class RepetitionOptions:
    """Options of the ``repetition`` check."""

    #: Block when one code point repeats more than this many times in a row ...
    max_char_run: int = bounded(256, ge=1)
    #: ... or, for the ASCII space (which pads fixed-width tables and code), this many.
    max_space_run: int = bounded(2048, ge=1)
    #: Block when the most frequent token is more than this share of all tokens ...
    max_top_token_ratio: float = bounded(0.5, gt=0.0, le=1.0)
    #: ... provided the text has at least this many tokens.
    min_tokens: int = bounded(50, ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


class RepetitionCheck(AnalysisCheck):
    """Blocks character runs and token floods."""

    Options = RepetitionOptions
    CATEGORY: ClassVar[str] = "flooding"
    REASON_CHAR_RUN: ClassVar[str] = "character flooding (one character repeated)"
    REASON_TOKEN: ClassVar[str] = "token flooding (one token dominates the text)"

    options: RepetitionOptions

    def _verdict(self, a: Analysis) -> Verdict:
        o = self.options
        details = (
            ("max_char_run", str(a.max_char_run)),
            ("max_space_run", str(a.max_space_run)),
            ("top_token_ratio", f"{a.top_token_ratio:.3f}"),
            ("tokens", str(a.token_count)),
        )
        cats = (self.CATEGORY,)
        over_run = max((a.max_char_run - o.max_char_run) / o.max_char_run,
                       (a.max_space_run - o.max_space_run) / o.max_space_run)
        if over_run > 0:
            score = min(1.0, 0.7 + 0.3 * over_run)
            return self.block(self.REASON_CHAR_RUN, score, categories=cats, details=details)
        ratio_applies = a.token_count >= o.min_tokens
        if ratio_applies and a.top_token_ratio > o.max_top_token_ratio:
            room = 1.0 - o.max_top_token_ratio + 1e-9
            over = (a.top_token_ratio - o.max_top_token_ratio) / room
            score = min(1.0, 0.7 + 0.3 * over)
            return self.block(self.REASON_TOKEN, score, categories=cats, details=details)
        score = 0.5 * max(a.max_char_run / (o.max_char_run + 1),
                          a.max_space_run / (o.max_space_run + 1))
        if ratio_applies:
            score = max(score, 0.5 * a.top_token_ratio / o.max_top_token_ratio)
        return self.allow(score=min(score, 0.5), details=details)
